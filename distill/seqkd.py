"""Sequence-level KD (SeqKD): the teacher's answers as the student's training text.

Two forms, one library:

* **Off-line** (the published recipe; scripts/<family>/tools/generate_data_seqkd.sh, process_pseudo_data_seqkd.sh,
  seqkd/seqkd_*.sh): the teacher answers every prompt of a processed split once (:func:`generate_data`, below, behind
  ``tools/generate_data.py``), the answers are processed like any data set, and the student is fine-tuned on them.
* **In the step** (``train_distill.py --seqkd``, :class:`SeqKDObjective`): the teacher answers each batch's prompts in
  the objective's ``prepare`` (sampled afresh every epoch with the ``--gen-*`` decoding settings), and the student
  trains on those answers: cross-entropy, plus ``--kd-ratio`` times the token-level divergence on the same text
  (Kim & Rush's "SeqKD + word-level KD").

The data generation:

    python tools/generate_data.py --model-path results/gpt2/train/sft/gpt2-xlarge/best \\
        --data-dir processed_data/dolly/full/gpt2 --save data/dolly_seqkd/gpt2-xlarge --do-sample
    torchrun --nproc_per_node 8 tools/generate_data.py ...        # the prompts are sharded over the ranks

The teacher is a model directory, or a LoRA adapter directory (its base is loaded), or ``--model-path`` plus
``--peft-path``; adapters are merged for inference. Decoding is greedy unless ``--do-sample`` (``--top-k``, ``--top-p``,
``--temperature``); ``--no-repeat-ngram-size`` and ``--repetition-penalty`` apply to either; ``--max-new-tokens``
caps each answer and ``--max-prompt-length`` keeps the prompt's last tokens.

Output, in ``--save``, in the raw instruction format (so ``tools/process_data_dolly.py`` processes it like any
``train.jsonl`` + ``valid.jsonl`` data set):

* ``train.jsonl``: one record per example of ``--split``, in order: its ``instruction``, ``input``, ``category`` (and
  any extra field), ``output`` = the teacher's response, ``references`` = the original ground-truth references,
  ``teacher`` = ``--model-path`` (and ``teacher_peft`` = ``--peft-path`` when given). Empty responses are kept (the
  student then learns to stop at once, as the teacher does), counted and reported.
* ``valid.jsonl``: the processed directory's ``valid`` records unchanged (ground truth), so evaluation during the
  student's training still measures real answers.
* ``generation.json``: the settings and counts (examples, empty responses, mean response tokens).

Only the ``prompt`` field the processing tool adds is left out of both files (processing rebuilds it).

Resumable: answers are written in parts of ``--part-size`` examples, ``<save>/.parts/part_XXXXX.jsonl`` (each written
atomically), with the run's settings in ``<save>/.parts/settings.json``. A restart with the same settings skips the
parts already written (the number of ranks, ``--eval-batch-size`` and ``--progress-interval`` may change); other
settings (the teacher, the data, every decoding option) stop with an error.
The final files are assembled, each atomically, once every part exists; the parts stay (a re-run only reassembles;
delete ``.parts`` to save the space). A sampled part draws from a seed fixed by
``--seed`` and its part number, so a resumed run samples what an uninterrupted one would (for one world size).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Sequence

# Only torch-free modules here: --help and bad input answer before torch loads; the rest is imported in the run.
from data_utils.atomic import write_json_atomic, write_jsonl_atomic
from data_utils.splits import require_split
from distill.config import (ConfigError, GenerationConfig, InputError, _check, _opt, exit_on_input_error,
                            no_effect_warnings, parse_configs)
from distill.inputs import check_adapter_dir, check_model_dir, is_adapter_dir
from distill.parts import (PartStore, compute_parts, model_digest, part_ranges, part_seed, rank0_decides,
                           read_jsonl, split_digest)

if TYPE_CHECKING:
    from data_utils.datasets import InstructionDataset
    from distill import dist

#: Fields the processing tool derives from a record (the rendered prompt); left out of the raw output.
DERIVED_FIELDS = frozenset({"prompt"})
PARTS_DIR = ".parts"


@dataclass
class SeqKDConfig:
    model_path: Optional[str] = _opt(None, "Teacher: model directory, or a LoRA adapter directory (its base is "
                                           "loaded).")
    peft_path: Optional[str] = _opt(None, "LoRA adapter applied to --model-path (merged for inference).")
    data_dir: Optional[str] = _opt(None, "Processed directory (tools/process_data_dolly.py) holding "
                                         "<split>_0.bin/.idx, <split>.jsonl and valid.jsonl.")
    split: str = _opt("train", "Split whose prompts the teacher answers.")
    save: Optional[str] = _opt(None, "Output directory: train.jsonl, valid.jsonl, generation.json, .parts/.")
    dtype: Literal["fp32", "bf16", "fp16"] = _opt("fp32", "Teacher precision (fp16 needs a GPU).")
    max_prompt_length: int = _opt(256, "Prompt tokens kept (from the right).")
    part_size: int = _opt(1000, "Examples per resumable part file.")
    max_examples: int = _opt(-1, "Answer only the first N prompts of --split (-1: all).")
    seed: int = _opt(10, "Sampling seed (with --do-sample); part k uses seed + k * 100003 (+ rank).")
    trust_remote_code: bool = _opt(False, "Allow a teacher whose config or tokenizer needs custom code shipped with "
                                          "it (auto_map): that code runs in this process. Off: refused.")

    def __post_init__(self) -> None:
        _check(self.model_path is not None, "model_path", "is required (the teacher's model or adapter directory)")
        _check(self.data_dir is not None, "data_dir", "is required (a processed directory, e.g. "
                                                      "processed_data/dolly/full/gpt2)")
        _check(self.save is not None, "save", "is required (the output directory, e.g. data/dolly_seqkd/<teacher>)")
        _check(self.max_prompt_length > 0, "max_prompt_length", "must be positive")
        _check(self.part_size > 0, "part_size", f"must be positive, got {self.part_size}")
        _check(self.max_examples == -1 or self.max_examples > 0, "max_examples",
               f"must be -1 (all) or positive, got {self.max_examples}")


# ---------------------------------------------------------------------------------------------------------------
# Small pure helpers


def teacher_record(src: dict[str, Any], response: str, teacher: str, teacher_peft: Optional[str]) -> dict[str, Any]:
    """A raw-format training record: ``src``'s fields, ``output`` = the teacher's ``response``, ``references`` = the
    original ground truth, and where it came from. Key order follows ``src`` (instruction, input, output, ...)."""
    refs = src.get("references") or [src["output"]]
    rec = {k: v for k, v in src.items() if k not in DERIVED_FIELDS}
    rec["output"] = response
    rec["references"] = [str(r) for r in refs]
    rec["teacher"] = teacher
    if teacher_peft is not None:
        rec["teacher_peft"] = teacher_peft
    return rec


def raw_record(src: dict[str, Any]) -> dict[str, Any]:
    """A processed ``valid.jsonl`` record as raw data: unchanged but for the derived fields."""
    return {k: v for k, v in src.items() if k not in DERIVED_FIELDS}


def run_settings(cfg: SeqKDConfig, gen: GenerationConfig, num_examples: int) -> dict[str, Any]:
    """What decides the content of the parts; a resumed run must match it. Batch size, world size and the progress
    interval are left out: they only change how the work is split or reported (greedy answers may differ in the last
    float bits, not in kind; left padding is not part of any prompt, even for the repetition penalty)."""
    from distill.generation import decoding_settings

    return {
        # Contents, not paths (distill.parts): a moved teacher or dataset still resumes, a retrained one does not.
        "teacher_sha256": model_digest(cfg.model_path), "teacher_peft_sha256": model_digest(cfg.peft_path),
        "data_sha256": split_digest(cfg.data_dir, cfg.split), "split": cfg.split,  # type: ignore[arg-type]
        "num_examples": num_examples, "part_size": cfg.part_size, "dtype": cfg.dtype,
        "max_prompt_length": cfg.max_prompt_length, "seed": cfg.seed,
        # Every decoding option, --no-repeat-ngram-size and --repetition-penalty included.
        "generation": decoding_settings(gen),
    }


# ---------------------------------------------------------------------------------------------------------------
# Checks (all before the teacher is loaded)


def check_inputs(cfg: SeqKDConfig) -> None:
    """Paths and layout; raises InputError / FileNotFoundError with one line naming the input and the fix."""
    check_model_dir(cfg.model_path, "--model-path", trust_remote_code=cfg.trust_remote_code)
    if cfg.peft_path is not None:
        if not is_adapter_dir(cfg.peft_path):
            raise InputError(f"--peft-path {cfg.peft_path}: no adapter_config.json there; pass a LoRA adapter "
                             f"directory (e.g. results/<family>/train/sft/<teacher>/best)")
        if is_adapter_dir(cfg.model_path):  # type: ignore[arg-type]
            raise InputError(f"--model-path {cfg.model_path} is itself an adapter; drop --peft-path or pass the "
                             f"base model as --model-path")
        check_adapter_dir(cfg.peft_path, "--peft-path")
    data_dir, save = Path(cfg.data_dir), Path(cfg.save)  # type: ignore[arg-type]
    require_split(data_dir, cfg.split)
    for name in (f"{cfg.split}.jsonl", "valid.jsonl"):
        if not (data_dir / name).is_file():
            raise InputError(f"--data-dir {data_dir}: {name} not found (the raw records of the processed split); "
                             f"re-run tools/process_data_dolly.py into that directory")
    if save.resolve() == data_dir.resolve():
        raise InputError(f"--save {save} is --data-dir: it would overwrite the processed records; "
                         f"choose another directory (e.g. data/dolly_seqkd/<teacher>)")
    if save.exists() and not save.is_dir():
        raise InputError(f"--save {save} is a file; pass a directory")
    # Before the teacher loads (distill/preflight.py): the prompts' binaries themselves, and --save writable (rank 0
    # writes there; the directories made for the probe go again, so a later refusal leaves nothing behind).
    from distill import preflight

    preflight.check_split(data_dir, cfg.split, num=cfg.max_examples)
    if preflight.is_main_process():
        preflight.check_writable_dir(str(save), "--save", keep=False)


def check_tokenizer_matches(data_dir: Path, tokenizer: Any, model_path: str, warn: bool = True) -> None:
    """The prompts are stored as token ids, so the teacher must read them with the tokenizer that wrote them
    (meta.json's fingerprint, data_utils.processing.check_data_tokenizer)."""
    from data_utils.processing import check_data_tokenizer, print_warning

    check_data_tokenizer(data_dir, tokenizer, model_path, warn=print_warning if warn else None)


# ---------------------------------------------------------------------------------------------------------------
# The run


def assemble(save: Path, store: PartStore, parts: list[range], valid_records: list[dict[str, Any]],
             summary: dict[str, Any]) -> dict[str, Any]:
    """Joins the parts into ``train.jsonl`` and writes ``valid.jsonl`` and ``generation.json`` (each atomically)."""
    recs = store.gather(parts)
    train = [{key: v for key, v in r.items() if key not in ("index", "num_tokens")} for r in recs]
    summary["response_tokens"] += sum(int(r.get("num_tokens", 0)) for r in recs)
    summary["empty_responses"] = sum(1 for r in train if not r["output"].strip())
    summary["mean_response_tokens"] = summary["response_tokens"] / max(len(train), 1)
    write_jsonl_atomic(save / "train.jsonl", train)
    write_jsonl_atomic(save / "valid.jsonl", valid_records)
    write_json_atomic(save / "generation.json", summary)
    return summary


def generate_parts(cfg: SeqKDConfig, gen: GenerationConfig, env: dist.DistEnv, tokenizer: Any,
                   dataset: InstructionDataset, parts: list[range], todo: list[int], store: PartStore) -> None:
    """Loads the teacher and writes each part of ``todo`` (every rank generates its shard, rank 0 writes)."""
    from distill.generation import generate_split
    from distill.models import DTYPES, load_model

    model = load_model(cfg.model_path, DTYPES[cfg.dtype], peft_path=cfg.peft_path,  # type: ignore[arg-type]
                       merge_adapter=True, trust_remote_code=cfg.trust_remote_code).to(env.device)
    model.eval()
    raw = dataset.raw or []

    def answer(k: int, within: Any) -> list[dict[str, Any]]:
        recs = generate_split(model, tokenizer, dataset, gen, rank=env.rank, world_size=env.world_size,
                              device=env.device, max_prompt_length=cfg.max_prompt_length, indices=parts[k],
                              seed=part_seed(cfg.seed, k), progress=within)
        return [{"index": r["index"], "num_tokens": r["num_tokens"],
                 **teacher_record(raw[r["index"]], r["response"], cfg.model_path,  # type: ignore[arg-type]
                                  cfg.peft_path)} for r in recs]

    compute_parts(store, parts, todo, env, answer, "part",
                  note=lambda recs: f", {sum(1 for r in recs if not r['output'])} empty",
                  progress_interval=gen.progress_interval)


def generate_data(cfg: SeqKDConfig, gen: GenerationConfig) -> dict[str, Any]:
    """Generates, resumes and assembles; returns the summary written to ``generation.json`` (on every rank)."""
    check_inputs(cfg)
    data_dir, save = Path(cfg.data_dir), Path(cfg.save)  # type: ignore[arg-type]
    store = PartStore(save / PARTS_DIR, by_leaf=True)
    from data_utils.datasets import InstructionDataset
    from distill import dist
    from distill.models import load_tokenizer

    env = dist.init_distributed(use_deepspeed=False)
    if env.device.type == "cpu" and cfg.dtype == "fp16":
        raise ConfigError("--dtype fp16 needs a GPU; use bf16 or fp32 on CPU")
    tokenizer = load_tokenizer(cfg.model_path, cfg.trust_remote_code)  # type: ignore[arg-type]
    check_tokenizer_matches(data_dir, tokenizer, cfg.model_path, warn=env.is_main)  # type: ignore[arg-type]
    dataset = InstructionDataset(data_dir, cfg.split, num=cfg.max_examples, vocab_size=len(tokenizer))
    valid_records = [raw_record(r) for r in read_jsonl(data_dir / "valid.jsonl")]
    parts = part_ranges(len(dataset), cfg.part_size)
    settings = run_settings(cfg, gen, len(dataset))
    fix = f"run with those settings to resume, or delete {store.root} to start over"

    todo = rank0_decides(env, lambda: store.plan(parts, settings, fix))
    log = print if env.is_main else (lambda *a, **k: None)
    log(f"{len(dataset)} prompts in {len(parts)} parts of <= {cfg.part_size}: {len(parts) - len(todo)} already "
        f"done, {len(todo)} to generate on {env.world_size} rank(s)", flush=True)

    if todo:
        generate_parts(cfg, gen, env, tokenizer, dataset, parts, todo, store)

    summary: dict[str, Any] = {**settings, "valid_examples": len(valid_records),
                               "parts": len(parts), "parts_reused": len(parts) - len(todo),
                               "parts_generated": len(todo), "world_size": env.world_size, "response_tokens": 0}
    if env.is_main:
        summary = assemble(save, store, parts, valid_records, summary)
        log(f"wrote {save / 'train.jsonl'} ({summary['num_examples']} teacher responses, "
            f"{summary['mean_response_tokens']:.1f} tokens on average) and {save / 'valid.jsonl'} "
            f"({summary['valid_examples']} original records)", flush=True)
        if summary["empty_responses"]:
            log(f"warning: {summary['empty_responses']} of {summary['num_examples']} teacher responses are empty "
                f"(kept: the student learns to stop at once on those prompts)", flush=True)
    summary = dist.all_gather_objects(summary)[0]
    dist.finish()
    return summary


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """The data generation's command line (tools/generate_data.py)."""
    cfg, gen = parse_configs([SeqKDConfig, GenerationConfig], argv, "SeqKD data: a teacher answers every prompt of "
                             "a processed split; the student is then fine-tuned on its answers (distill/seqkd.py).")
    from distill.preflight import is_main_process

    if is_main_process():
        for line in no_effect_warnings(gen):  # e.g. --temperature without --do-sample
            print(line, file=sys.stderr, flush=True)
    return generate_data(cfg, gen)

