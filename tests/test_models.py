"""The teacher the trainer loads and places (distill/models.py load_teacher): a LoRA-adapter teacher merged for
inference, bf16, and a ZeRO-3 teacher partitioned with its own DeepSpeed config, each giving the logits of the
plain model; the checks that run before any model loads."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_utils.datasets import InstructionDataset, LMCollator
from distill.config import InputError
from distill.models import TeacherSpec, check_teacher, load_model, load_teacher, load_tokenizer, teacher_ds_config
from distill.objectives import forward_logits

pytestmark = pytest.mark.usefixtures("in_process")  # see conftest.in_process_run


def batch(data: Path, tok) -> dict[str, torch.Tensor]:
    valid = InstructionDataset(data, "valid")
    return LMCollator(tok.pad_token_id, tok.eos_token_id, 128)([valid[i] for i in range(3)])


@pytest.fixture(scope="module")
def adapter_teacher(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny teacher with non-zero (random) B matrices, so merging changes the outputs."""
    from peft import LoraConfig, TaskType, get_peft_model

    base = tiny_models["gpt2"]["teacher"]
    torch.manual_seed(3)
    model = get_peft_model(load_model(str(base)), LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                                             lora_dropout=0.0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    load_tokenizer(str(base)).save_pretrained(out)
    return out


def test_adapter_teacher_is_merged_and_frozen(adapter_teacher: Path, tiny_models: dict, processed_tiny: Path) -> None:
    from peft import PeftModel

    base = tiny_models["gpt2"]["teacher"]
    tok = load_tokenizer(str(base))
    b = batch(processed_tiny, tok)
    reference = PeftModel.from_pretrained(load_model(str(base)), str(adapter_teacher)).eval()
    plain = load_model(str(base)).eval()
    runner, hf = load_teacher(TeacherSpec(str(adapter_teacher)), tok, torch.device("cpu"), {})
    assert runner is hf and not hf.training and not any(p.requires_grad for p in hf.parameters())
    assert not hasattr(hf, "peft_config")  # merged into plain weights
    with torch.no_grad():
        got, want, base_logits = forward_logits(runner, b), forward_logits(reference, b), forward_logits(plain, b)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert float((want - base_logits).abs().max()) > 1e-2  # the adapter matters


@pytest.mark.parametrize("adapter", [False, True])
def test_zero3_teacher_is_partitioned_and_gives_the_same_logits(adapter: bool, adapter_teacher: Path,
                                                                tiny_models: dict, processed_tiny: Path) -> None:
    """A world of one under ZeRO-3: the teacher's parameters live in DeepSpeed partitions (loaded straight into them
    without an adapter; merged first with one), and its forwards give the logits of the whole model."""
    from distill import dist

    dist.init_distributed()
    base = tiny_models["gpt2"]["teacher"]
    tok = load_tokenizer(str(base))
    spec = TeacherSpec(str(adapter_teacher) if adapter else str(base))
    student_ds = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3}}
    runner, hf = load_teacher(spec, tok, torch.device("cpu"), student_ds)
    assert runner is not hf and all(hasattr(p, "ds_id") for p in hf.parameters())  # partitioned by DeepSpeed
    want_model = load_teacher(spec, tok, torch.device("cpu"), {})[0]
    b = batch(processed_tiny, tok)
    with torch.no_grad():
        torch.testing.assert_close(forward_logits(runner, b), forward_logits(want_model, b), rtol=1e-5, atol=1e-5)


def test_teacher_ds_config_partitions_without_optimizer_state() -> None:
    student = {"train_micro_batch_size_per_gpu": 4, "optimizer": {"type": "x"},
               "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu"},
                                     "offload_param": {"device": "cpu"}}}
    cfg = teacher_ds_config(student, "bf16")
    assert cfg["zero_optimization"] == {"stage": 3, "offload_param": {"device": "cpu"}}
    assert cfg["bf16"] == {"enabled": True} and cfg["fp16"] == {"enabled": False} and "optimizer" not in cfg


def test_teacher_checks_before_loading(tiny_models: dict, tmp_path: Path) -> None:
    tok = load_tokenizer(str(tiny_models["gpt2"]["student"]))
    with pytest.raises(InputError, match="--teacher-model-fp16 needs a GPU"):
        check_teacher(TeacherSpec(str(tiny_models["gpt2"]["teacher"]), dtype="fp16"), tok, torch.device("cpu"))
    other = load_tokenizer(str(tiny_models["gpt2"]["teacher"]))
    other.add_tokens(["<extra-token>"])
    odd = tmp_path / "odd"
    load_model(str(tiny_models["gpt2"]["teacher"])).save_pretrained(odd)
    other.save_pretrained(odd)
    with pytest.raises(InputError, match="tokenizers disagree"):
        check_teacher(TeacherSpec(str(odd)), tok, torch.device("cpu"))
