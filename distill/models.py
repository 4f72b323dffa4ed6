"""Loading models and tokenizers — only through ``from_pretrained(path)``, for every family and size alike.

Safe by default: a directory is checked complete first (:func:`distill.inputs.check_model_dir`); weights load from
safetensors or with ``weights_only=True`` (a pickle that cannot run code); code shipped with a checkpoint
(``auto_map``) runs only with ``trust_remote_code`` (``--trust-remote-code``); a tokenizer that loaded without its
vocabulary (one token) is an error."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
from torch import nn
from transformers import AutoModelForCausalLM

from data_utils.processing import load_tokenizer as load_checked_tokenizer
from distill.config import InputError
from distill.inputs import (adapter_base, check_adapter_dir, check_model_dir, is_adapter_dir,  # noqa: F401
                            model_type, tokenizer_source)  # (re-exported)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}  # --dtype of the inference tools


def _remote_code_refused(e: ValueError, path: str) -> InputError:
    return InputError(f"{path}: loading it needs custom code from the checkpoint, which is not run by default; "
                      f"pass --trust-remote-code if you trust it ({str(e).splitlines()[0][:200]})")


def load_tokenizer(path: str, trust_remote_code: bool = False) -> Any:
    """The model's tokenizer (a LoRA adapter's own, else its base's), with a pad token (EOS when the tokenizer has
    none, as GPT-2 style vocabularies do). InputError when it has no usable vocabulary (fewer than 2 tokens, or
    special ids outside it) — transformers builds a one-token tokenizer from a directory without vocabulary files."""
    tok = load_checked_tokenizer(tokenizer_source(path), trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str, dtype: torch.dtype = torch.float32, *, peft_path: Optional[str] = None,
               merge_adapter: bool = False, trust_remote_code: bool = False) -> nn.Module:
    """A causal LM from a complete model directory, or from a LoRA adapter directory (its base is loaded first).

    ``peft_path`` applies an adapter on top of ``path``; ``merge_adapter`` folds it into plain weights (inference).
    Weights load from safetensors or ``torch.load(weights_only=True)`` only (peft reads adapters the same way).
    """
    check_model_dir(path, trust_remote_code=trust_remote_code)
    if is_adapter_dir(path):
        if peft_path is not None:
            raise ValueError(f"{path} is itself an adapter; do not also pass an adapter ({peft_path})")
        path, peft_path = adapter_base(path), path
    elif peft_path is not None:
        check_adapter_dir(peft_path, "--peft-path")
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                     weights_only=True)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise _remote_code_refused(e, path) from None
        raise
    if peft_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, peft_path, is_trainable=not merge_adapter)
        if merge_adapter:
            model = model.merge_and_unload()
    return model


def apply_lora(model: nn.Module, r: int, alpha: int, dropout: float, peft_path: Optional[str] = None) -> nn.Module:
    """Wraps ``model`` with trainable LoRA adapters (all other weights frozen).

    Target modules are peft's per-architecture defaults (attention projections of GPT-2, OPT, LLaMA, Qwen2)."""
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model

    if peft_path is not None:
        check_adapter_dir(peft_path, "--peft-path")
        return PeftModel.from_pretrained(model, peft_path, is_trainable=True)
    cfg = LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=alpha, lora_dropout=dropout)
    return get_peft_model(model, cfg)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def precision_from_ds_config(ds_config: dict[str, Any]) -> torch.dtype:
    from distill.hardware import ds_config_precision

    return DTYPES[ds_config_precision(ds_config)]


def real_vocab_mask(vocab_size_model: int, tokenizer_len: int) -> Optional[torch.Tensor]:
    """True for embedding rows the tokenizer can emit; None when the model has no padded rows."""
    if vocab_size_model <= tokenizer_len:
        return None
    mask = torch.zeros(vocab_size_model, dtype=torch.bool)
    mask[:tokenizer_len] = True
    return mask


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def check_tokenizers_agree(student_tok: Any, teacher_tok: Any, student_path: str, teacher_path: str) -> None:
    """Distillation compares distributions token by token, so both sides must use the same vocabulary and specials."""
    problems = []
    if student_tok.get_vocab() != teacher_tok.get_vocab():
        problems.append(f"vocabularies differ ({len(student_tok)} vs {len(teacher_tok)} tokens)")
    for name in ("eos_token_id", "bos_token_id"):
        a, b = getattr(student_tok, name), getattr(teacher_tok, name)
        if a != b:
            problems.append(f"{name} {a} vs {b}")
    if problems:
        raise InputError(f"student {student_path} and teacher {teacher_path} tokenizers disagree: "
                         f"{'; '.join(problems)} — distil between models of one tokenizer family")


def embedding_rows(model: nn.Module) -> int:
    return int(model.get_input_embeddings().weight.shape[0])


@dataclass(frozen=True)
class TeacherSpec:
    """The frozen teacher a trainer loads and places: a model directory (or a LoRA adapter directory on its base),
    optionally an adapter on top (merged for inference), and its precision (``fp32``, ``bf16``, ``fp16``)."""
    path: str
    peft_path: Optional[str] = None
    dtype: str = "fp32"
    trust_remote_code: bool = False


def teacher_ds_config(student_ds: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """DeepSpeed config of a ZeRO-3 teacher: partitioned like the student (its ZeRO-3 section without the optimizer
    parts), in the teacher's own precision, no optimizer."""
    zero = {k: v for k, v in student_ds.get("zero_optimization", {}).items() if k != "offload_optimizer"}
    return {"train_micro_batch_size_per_gpu": student_ds.get("train_micro_batch_size_per_gpu", 1),
            "gradient_accumulation_steps": 1, "zero_optimization": {**zero, "stage": 3},
            "bf16": {"enabled": dtype == "bf16"}, "fp16": {"enabled": dtype == "fp16"},
            "steps_per_print": 2**31 - 1, "wall_clock_breakdown": False}


def check_teacher(spec: TeacherSpec, tokenizer: Any, device: Any) -> None:
    """What can be checked of a teacher before any model loads: its tokenizer agrees with the student's
    (distillation compares distributions token by token), and fp16 only on a GPU."""
    check_tokenizers_agree(tokenizer, load_tokenizer(spec.path, spec.trust_remote_code), "--model-path", spec.path)
    if spec.dtype == "fp16" and getattr(device, "type", str(device)) == "cpu":
        raise InputError("--teacher-model-fp16 needs a GPU; use --teacher-model-bf16 or fp32 on CPU")


def load_teacher(spec: TeacherSpec, tokenizer: Any, device: Any,
                 student_ds: Mapping[str, Any]) -> tuple[nn.Module, nn.Module]:
    """(what the trainer runs forwards with, the Hugging Face model inside) of a frozen teacher.

    :func:`check_teacher` (tokenizer agreement, fp16 only on a GPU) is the caller's, before any model loads
    (distill/entry.py does it); checked here: enough embedding rows for the tokenizer. Under ZeRO-3 (the student's DeepSpeed config) the
    teacher is partitioned over the ranks like the student — loaded straight into its partitions when it has no
    adapter to merge — so a teacher larger than one device's memory fits beside the student; otherwise it is put
    whole on the device."""
    dtype = DTYPES[spec.dtype]
    stage3 = int(student_ds.get("zero_optimization", {}).get("stage", 0)) == 3
    merge_needed = spec.peft_path is not None or is_adapter_dir(spec.path)
    if stage3:
        import deepspeed

        cfg = teacher_ds_config(student_ds, spec.dtype)
        if merge_needed:  # an adapter is merged into whole weights first, then partitioned
            teacher = load_model(spec.path, dtype, peft_path=spec.peft_path, merge_adapter=True,
                                 trust_remote_code=spec.trust_remote_code)
        else:
            from transformers.integrations import HfDeepSpeedConfig

            live = HfDeepSpeedConfig(cfg)  # while it lives, from_pretrained loads each rank's partition only
            try:
                teacher = load_model(spec.path, dtype, trust_remote_code=spec.trust_remote_code)
            finally:
                del live
        _check_rows(teacher, tokenizer, spec.path)
        teacher.eval().requires_grad_(False)
        engine, *_ = deepspeed.initialize(model=teacher, config=cfg)
        engine.eval()
        return engine, engine.module
    teacher = load_model(spec.path, dtype, peft_path=spec.peft_path, merge_adapter=True,
                         trust_remote_code=spec.trust_remote_code)
    _check_rows(teacher, tokenizer, spec.path)
    teacher.to(device).eval().requires_grad_(False)
    return teacher, teacher


def _check_rows(teacher: nn.Module, tokenizer: Any, path: str) -> None:
    weight = teacher.get_input_embeddings().weight
    rows = int(getattr(weight, "ds_shape", weight.shape)[0])  # a ZeRO-3 partition keeps its full shape here
    if rows < len(tokenizer):
        raise InputError(f"teacher {path} has {rows} embedding rows, fewer than the tokenizer's {len(tokenizer)} "
                         f"tokens")
