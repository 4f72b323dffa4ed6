"""Selective Reflection Distillation (SRD): curate and order the training set by how the initial student copes.

SRD is a data layer in front of any white-box KD loss:

1. **Reflection** — the initial student answers every training prompt; each example gets the Rouge-L of that answer
   against the references and the student's mean token cross-entropy on the ground-truth response
   (:func:`run_reflection`, ``tools/srd_reflect.py``; written to ``<srd-dir>/reflection.jsonl``, resumable by parts).
2. **Ranking** — examples are ranked by Rouge-L (high = easy) and by loss (low = easy); the ranks are fused by
   reciprocal-rank fusion, ``score = 1/(k + r_rouge) + 1/(k + r_loss)``, and sorted easy -> hard
   (:func:`rank_examples`); or, with ``--stratify-by FIELD``, within each group of that field of ``train.jsonl``
   (e.g. the task category), every group cut into parts of its own (:func:`stratified_ranking`).
3. **Staging** — the sorted list is cut into ``num_stages`` equal parts; stage ``i`` trains on the first ``i + 1``
   parts (cumulative), and only ``keep_stages`` stages are trained, so the hardest parts are never used
   (:func:`part_sizes`, :func:`stage_index_lists`, :func:`write_stage_data`).
4. **Curriculum** — stage after stage, each from the previous stage's checkpoint, with a rising KD temperature
   (:func:`temperature_schedule`) and a schedule of its own (``distill/srd_plan.py``); the runner is
   ``distill/srd_runner.py`` (``tools/srd_run.py``).

Conventions: ranks are 1-based. Two tie orders (``ties``): ``average`` (the default) — tied metric values share the
*average* of the positions they span (fractional ranking), so a tie never favours the lower index within one metric,
and after fusion equal scores are ordered by example index; ``stable`` — the release's ``tools/rank.py``: three
stable sorts one after the other (Rouge-L high -> low over the file order, loss low -> high over that, the fused score
high -> low over that), ranks are positions, so a tie keeps the order the previous sort left (:func:`stable_ranking`).
Either way the easy -> hard order is fully deterministic. A missing loss (an example with no target token left after
truncation) ranks after every measured one.
"""
from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Sequence

import numpy as np

# No torch at import (the reflection imports it when it runs): the runner's and the reflection's --help and input
# errors answer at once. write_json_atomic, read_jsonl and settings_conflict are also used as srd.<name>
# (distill/srd_runner.py, the tests).
from data_utils.atomic import build_dir, write_json_atomic, write_jsonl_atomic  # noqa: F401
from data_utils.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
from data_utils.splits import require_split, split_prefix
from distill.config import GenerationConfig, InputError, _check, _opt, exit_on_input_error, parse_configs
from distill.parts import (PartStore, compute_parts, model_digest, part_ranges, part_seed,  # noqa: F401
                           rank0_decides, read_jsonl, settings_conflict, split_digest)

if TYPE_CHECKING:
    import torch

    from data_utils.datasets import InstructionDataset, LMCollator
    from distill import dist

RANK_BY = ("rrf", "rouge", "loss")
RANK_TIES = ("average", "stable")
REFLECTION_FILE = "reflection.jsonl"
REFLECTION_PARTS = "reflection_parts"
RANKING_FILE = "ranking.jsonl"
STAGE_MARKER = "srd_stage.json"


# ----------------------------------------------------------------------------------------------------------------
# Ranking and staging: pure functions
# ----------------------------------------------------------------------------------------------------------------
def fractional_ranks(values: Sequence[Optional[float]], higher_is_easier: bool) -> list[float]:
    """1-based ranks, easiest first. Equal values share the average of the positions they span (so [5, 5] -> [1.5,
    1.5]); ``None`` (not measured) ranks after every value, all Nones tied."""
    known = [i for i, v in enumerate(values) if v is not None]
    sign = -1.0 if higher_is_easier else 1.0
    order = sorted(known, key=lambda i: sign * float(values[i])) + [i for i, v in enumerate(values) if v is None]
    ranks = [0.0] * len(values)
    pos = 0
    while pos < len(order):
        end = pos
        while end + 1 < len(order) and values[order[end + 1]] == values[order[pos]]:
            end += 1
        shared = (pos + 1 + end + 1) / 2.0  # mean of the 1-based positions pos+1 .. end+1
        for j in range(pos, end + 1):
            ranks[order[j]] = shared
        pos = end + 1
    return ranks


def rrf_scores(rank_lists: Sequence[Sequence[float]], k: float) -> list[float]:
    """Reciprocal-rank fusion: ``sum_m 1 / (k + rank_m[i])`` per example (higher = easier)."""
    if k < 0:
        raise ValueError(f"--rrf-k must be >= 0, got {k}")
    n = len(rank_lists[0])
    if any(len(r) != n for r in rank_lists):
        raise ValueError("rank lists differ in length")
    return [sum(1.0 / (k + r[i]) for r in rank_lists) for i in range(n)]


def stable_ranking(rouge: Sequence[float], loss: Sequence[Optional[float]], rank_by: str = "rrf",
                   k: float = 60.0) -> tuple[list[float], list[float], list[float], list[int]]:
    """The release's ranking (``tools/rank.py`` of the SRD code): ``(rank_rouge, rank_loss, score, order)``.

    Three stable sorts, each of the list the previous one left: by Rouge-L high -> low (over the file order), by loss
    low -> high, by the fused score high -> low; a metric's rank is the 1-based position after its sort. So tied
    Rouge-L values keep the file order, tied losses the Rouge-L order, and tied scores the loss order. A missing loss
    sorts after every measured one.
    """
    n = len(rouge)
    by_rouge = sorted(range(n), key=lambda i: -float(rouge[i]))  # sorted() is stable
    r_rouge = [0.0] * n
    for pos, i in enumerate(by_rouge):
        r_rouge[i] = float(pos + 1)
    by_loss = sorted(by_rouge, key=lambda i: (loss[i] is None, 0.0 if loss[i] is None else float(loss[i])))
    r_loss = [0.0] * n
    for pos, i in enumerate(by_loss):
        r_loss[i] = float(pos + 1)
    used = {"rrf": [r_rouge, r_loss], "rouge": [r_rouge], "loss": [r_loss]}[rank_by]
    score = rrf_scores(used, k)
    order = sorted(by_loss, key=lambda i: -score[i])
    return r_rouge, r_loss, score, order


def rank_examples(rouge: Sequence[float], loss: Sequence[Optional[float]], rank_by: str = "rrf",
                  k: float = 60.0, ties: str = "average") -> list[dict[str, Any]]:
    """Examples sorted easy -> hard: ``[{"index", "rank_rouge", "rank_loss", "score"}]``.

    ``rank_by``: ``rouge`` (Rouge-L alone), ``loss`` (loss alone) or ``rrf`` (both, fused). The score is the fused
    reciprocal rank of the chosen metric(s). ``ties``: ``average`` — tied values share their mean rank and equal
    scores keep example-index order; ``stable`` — the release's chain of stable sorts (:func:`stable_ranking`).
    """
    if rank_by not in RANK_BY:
        raise ValueError(f"--rank-by must be one of {', '.join(RANK_BY)}, got {rank_by!r}")
    if ties not in RANK_TIES:
        raise ValueError(f"--rank-ties must be one of {', '.join(RANK_TIES)}, got {ties!r}")
    if len(rouge) != len(loss):
        raise ValueError(f"{len(rouge)} Rouge-L values but {len(loss)} losses")
    if ties == "stable":
        r_rouge, r_loss, score, order = stable_ranking(rouge, loss, rank_by, k)
    else:
        r_rouge = fractional_ranks(rouge, higher_is_easier=True)
        r_loss = fractional_ranks(loss, higher_is_easier=False)
        used = {"rrf": [r_rouge, r_loss], "rouge": [r_rouge], "loss": [r_loss]}[rank_by]
        score = rrf_scores(used, k)
        order = sorted(range(len(rouge)), key=lambda i: (-score[i], i))
    return [{"index": i, "rank_rouge": r_rouge[i], "rank_loss": r_loss[i], "score": score[i]} for i in order]


def stratified_ranking(rouge: Sequence[float], loss: Sequence[Optional[float]], groups: Sequence[str],
                       num_parts: int, rank_by: str = "rrf", k: float = 60.0,
                       ties: str = "average") -> tuple[list[dict[str, Any]], list[int]]:
    """Rank within each group and cut every group into ``num_parts`` parts of its own: ``(ranked, sizes)``.

    Part ``p`` of the whole is the union of the groups' parts ``p``, so every group keeps the same share of its
    examples in each stage (a group smaller than ``num_parts`` fills its first parts only). One global ranking (the
    default, :func:`rank_examples`) compares Rouge-L and loss across tasks whose scales differ (an open-ended story
    scores a low Rouge-L whatever its quality) and so drops whole tasks; this one drops each task's hardest examples.
    ``ranked`` is easy -> hard as in :func:`rank_examples` (ranks and score are within the group) plus ``group``;
    inside a part, examples are ordered by their relative position in their group, then by index.
    """
    if len(groups) != len(rouge):
        raise ValueError(f"{len(groups)} group labels but {len(rouge)} examples")
    sizes = stratified_part_sizes(groups, num_parts)
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    keyed = []
    for g, idx in sorted(members.items()):
        ranked = rank_examples([rouge[i] for i in idx], [loss[i] for i in idx], rank_by, k, ties)
        part_of = np.repeat(np.arange(num_parts), _split(len(idx), num_parts))
        for pos, r in enumerate(ranked):
            keyed.append(((int(part_of[pos]), (pos + 0.5) / len(idx), idx[r["index"]]),
                          {**r, "index": idx[r["index"]], "group": g}))
    keyed.sort(key=lambda e: e[0])
    return [r for _, r in keyed], sizes


def stratified_part_sizes(groups: Sequence[str], num_parts: int) -> list[int]:
    """Part sizes of :func:`stratified_ranking` (they depend on the group sizes only, so a run knows them before the
    reflection): each group of ``n`` puts ``ceil`` or ``floor`` of ``n / num_parts`` in each part, earlier parts
    first."""
    part_sizes(len(groups), num_parts)  # the usual errors for num_parts < 1 or too few examples
    return np.sum([_split(n, num_parts) for n in Counter(groups).values()], axis=0).tolist()


def _split(n: int, num_parts: int) -> list[int]:
    """``n`` items in ``num_parts`` consecutive parts that differ by at most 1, earlier parts larger."""
    base, extra = divmod(n, num_parts)
    return [base + 1 if i < extra else base for i in range(num_parts)]


def part_sizes(n: int, num_parts: int) -> list[int]:
    """Sizes of ``num_parts`` consecutive parts of ``n`` items: differ by at most 1, earlier parts larger."""
    if num_parts < 1:
        raise ValueError(f"--num-stages must be >= 1, got {num_parts}")
    if n < num_parts:
        raise ValueError(f"{n} training examples cannot fill {num_parts} stages; lower --num-stages")
    return _split(n, num_parts)


def default_keep_stages(num_stages: int) -> int:
    """All but the hardest part (at least one stage)."""
    return max(num_stages - 1, 1)


def stage_index_lists(order: Sequence[int], num_stages: int, keep_stages: Optional[int] = None,
                      sizes: Optional[Sequence[int]] = None) -> list[list[int]]:
    """Example indices each trained stage uses: stage ``i`` = the first ``i + 1`` parts of the easy -> hard ``order``
    (cumulative). Only ``keep_stages`` stages (default ``num_stages - 1``) are returned. ``sizes``: the parts'
    sizes (default equal parts, :func:`part_sizes`; :func:`stratified_ranking` gives its own)."""
    keep = default_keep_stages(num_stages) if keep_stages is None else keep_stages
    if not 1 <= keep <= num_stages:
        raise ValueError(f"--keep-stages must be in 1..{num_stages} (--num-stages), got {keep}")
    if sizes is None:
        sizes = part_sizes(len(order), num_stages)
    elif len(sizes) != num_stages or sum(sizes) != len(order):
        raise ValueError(f"part sizes {list(sizes)} do not cut {len(order)} examples into {num_stages} parts")
    ends = np.cumsum(sizes).tolist()
    return [list(order[: ends[i]]) for i in range(keep)]


def temperature_schedule(num_trained: int, temperatures: Optional[Sequence[float]] = None, start: float = 1.0,
                         end: float = 2.0) -> list[float]:
    """KD temperature of each trained stage: ``temperatures`` as given (one per stage, or one for all), else linear
    start -> end (a single stage gets ``start``)."""
    if temperatures is not None:
        if len(temperatures) not in (1, num_trained):
            raise ValueError(f"--temperatures has {len(temperatures)} values but {num_trained} stages are trained "
                             f"(--num-stages/--keep-stages); give one for all or one per trained stage")
        out = [float(t) for t in temperatures] * (num_trained if len(temperatures) == 1 else 1)
    elif num_trained == 1:
        out = [float(start)]
    else:
        # Rounded so that 1.0 -> 2.0 over 3 stages reads 1.0, 1.5, 2.0 rather than 1.4999999999999998.
        out = [round(start + (end - start) * i / (num_trained - 1), 10) for i in range(num_trained)]
    bad = [t for t in out if not t > 0]
    if bad:
        raise ValueError(f"KD temperatures must be > 0, got {bad[0]} (--temperatures / --temperature-start/-end)")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Reflection
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class ReflectConfig:
    model_path: Optional[str] = _opt(None, "The initial student: model directory (or a LoRA adapter directory).")
    peft_path: Optional[str] = _opt(None, "LoRA adapter applied to --model-path (merged for inference).")
    data_dir: Optional[str] = _opt(None, "Processed directory (tools/process_data_dolly.py) with train_0.bin/.idx and "
                                         "train.jsonl (the references).")
    srd_dir: Optional[str] = _opt(None, "Output directory: reflection.jsonl and reflection_parts/.")
    dtype: Literal["fp32", "bf16", "fp16"] = _opt("fp32", "Student precision (fp16 needs a GPU).")
    max_length: int = _opt(512, "Maximum tokens of prompt + response (+ EOS) when scoring the ground truth.")
    max_prompt_length: int = _opt(256, "Prompt tokens kept (from the right) when generating.")
    loss_batch_size: int = _opt(8, "Examples per forward pass when scoring the ground truth (per rank).")
    part_size: int = _opt(1000, "Examples per resumable part file.")
    seed: int = _opt(10, "Sampling seed (with --do-sample); part k uses seed + k * 100003 (+ rank).")

    def __post_init__(self) -> None:
        _check(self.model_path is not None, "model_path", "is required (the initial student)")
        _check(self.data_dir is not None, "data_dir", "is required (e.g. processed_data/dolly/full/gpt2)")
        _check(self.srd_dir is not None, "srd_dir", "is required (where reflection.jsonl goes)")
        _check(self.max_length > 1, "max_length", f"must be > 1, got {self.max_length}")
        _check(self.max_prompt_length > 0, "max_prompt_length", "must be positive")
        _check(self.loss_batch_size > 0, "loss_batch_size", "must be positive")
        _check(self.part_size > 0, "part_size", f"must be positive, got {self.part_size}")


def reflection_settings(cfg: ReflectConfig, gen: GenerationConfig, num_examples: int) -> dict[str, Any]:
    """What decides the content of the reflection; a resumed run must match it. Batch sizes and the world size only
    change how the work is split, so they are left out."""
    data_dir = Path(cfg.data_dir)  # type: ignore[arg-type]
    return {
        # Contents, not paths (distill.parts): a moved student or dataset still resumes, a retrained one does not.
        "model_sha256": model_digest(cfg.model_path), "peft_sha256": model_digest(cfg.peft_path),
        "train_sha256": split_digest(data_dir, "train"),
        "num_examples": num_examples, "part_size": cfg.part_size, "dtype": cfg.dtype,
        "max_length": cfg.max_length, "max_prompt_length": cfg.max_prompt_length,
        # Greedy answers do not depend on the seed, so training runs of other seeds can share one reflection.
        "seed": cfg.seed if gen.do_sample else None,
        "generation": {k: v for k, v in asdict(gen).items() if k != "eval_batch_size"},
    }


def reflection_store(srd_dir: Path) -> PartStore:
    """Where the reflection's parts and their settings live: ``<srd-dir>/reflection_parts/``."""
    return PartStore(srd_dir / REFLECTION_PARTS)


def reflection_is_complete(srd_dir: Path, settings: dict[str, Any]) -> bool:
    """True when ``reflection.jsonl`` was assembled by a run with exactly these settings."""
    if reflection_store(srd_dir).conflicts(settings) != [] or not (srd_dir / REFLECTION_FILE).is_file():
        return False  # None (no settings stored) or a list of differing settings
    try:
        load_reflection(srd_dir / REFLECTION_FILE, settings["num_examples"])
    except InputError:
        return False
    return True


def per_example_ce(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed token cross-entropy per row and the number of target tokens per row.

    logits [B, T, V], labels [B, T] pre-shifted (-100 ignored) -> (sums [B] float32, counts [B] int64).
    """
    import torch
    import torch.nn.functional as F

    from data_utils.datasets import IGNORE_INDEX

    sums = []
    for b in range(logits.shape[0]):
        # One row at a time: the float32 copy is [T, V], not [B, T, V] (large vocabularies make the latter huge).
        sums.append(F.cross_entropy(logits[b].float(), labels[b], ignore_index=IGNORE_INDEX, reduction="sum"))
    return torch.stack(sums), (labels != IGNORE_INDEX).sum(-1)


def ground_truth_losses(model: torch.nn.Module, dataset: InstructionDataset, indices: Sequence[int],
                        collate: LMCollator, batch_size: int,
                        device: torch.device) -> dict[int, tuple[Optional[float], int]]:
    """``{index: (mean token CE on the ground-truth response, or None with no target token; target tokens)}``."""
    import torch

    out: dict[int, tuple[Optional[float], int]] = {}
    with torch.no_grad():
        for s in range(0, len(indices), batch_size):
            batch = collate([dataset[i] for i in indices[s:s + batch_size]])
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device), use_cache=False).logits
            sums, counts = per_example_ce(logits, batch["labels"].to(device))
            for i, tot, c in zip(batch["index"].tolist(), sums.tolist(), counts.tolist()):
                out[i] = (tot / c if c > 0 else None, int(c))
    return out


def reflect_part(model: torch.nn.Module, tokenizer: Any, dataset: InstructionDataset, indices: range,
                 gen: GenerationConfig, cfg: ReflectConfig, env: dist.DistEnv, seed: int,
                 progress: Optional[Callable[[int, int], None]] = None) -> list[dict[str, Any]]:
    """Reflection records of one part, on every rank: generation, Rouge-L and loss are each sharded over ranks."""
    from data_utils.datasets import LMCollator
    from distill import dist
    from distill.generation import generate_split
    from distill.metrics import per_example_scores

    gens = generate_split(model, tokenizer, dataset, gen, rank=env.rank, world_size=env.world_size,
                          device=env.device, max_prompt_length=cfg.max_prompt_length, indices=indices, seed=seed,
                          progress=progress)
    by_index = {r["index"]: r for r in gens}
    mine = [indices[j] for j in dist.shard_indices(len(indices), env.rank, env.world_size, pad=False)]
    scores = per_example_scores([by_index[i]["response"] for i in mine], [dataset.references(i) for i in mine])
    collate = LMCollator(tokenizer.pad_token_id, tokenizer.eos_token_id, cfg.max_length)
    losses = ground_truth_losses(model, dataset, mine, collate, cfg.loss_batch_size, env.device)
    local = [{"index": i, "rougeL": s["rougeL"], "loss": losses[i][0], "loss_tokens": losses[i][1]}
             for i, s in zip(mine, scores)]
    merged: dict[int, dict[str, Any]] = {}
    for part in dist.all_gather_objects(local):
        for rec in part:
            merged[rec["index"]] = rec
    return [{**merged[i], "response": by_index[i]["response"], "num_tokens": by_index[i]["num_tokens"]}
            for i in indices]


def load_reflection(path: Path, num_examples: int) -> list[dict[str, Any]]:
    """The records of ``reflection.jsonl``, checked to be exactly examples 0..N-1 in order with their scores."""
    if not path.is_file():
        raise InputError(f"{path} not found: run the reflection first (python tools/srd_reflect.py)")
    recs = read_jsonl(path)
    if [r.get("index") for r in recs] != list(range(num_examples)):
        raise InputError(f"{path} does not hold examples 0..{num_examples - 1} in order (the training split has "
                         f"{num_examples}); delete it to recompute the reflection")
    for r in recs:
        if not isinstance(r.get("rougeL"), (int, float)) or not (r.get("loss") is None
                                                                 or isinstance(r["loss"], (int, float))):
            raise InputError(f"{path}: record {r.get('index')} lacks a numeric rougeL/loss; delete the file to "
                             f"recompute the reflection")
    return recs


def check_reflect_inputs(cfg: ReflectConfig) -> None:
    from distill.inputs import check_model_dir

    check_model_dir(cfg.model_path, "--model-path")
    require_split(cfg.data_dir, "train")  # type: ignore[arg-type]
    if not (Path(cfg.data_dir) / "train.jsonl").is_file():  # type: ignore[arg-type]
        raise InputError(f"--data-dir {cfg.data_dir}: train.jsonl not found (the references Rouge-L needs); "
                         f"re-run tools/process_data_dolly.py into that directory")


def run_reflection(cfg: ReflectConfig, gen: GenerationConfig) -> dict[str, Any]:
    """Computes (or resumes) the reflection and assembles ``<srd-dir>/reflection.jsonl``; returns a summary."""
    check_reflect_inputs(cfg)
    from distill import preflight

    if preflight.is_main_process():  # rank 0 writes the parts and reflection.jsonl there
        preflight.check_writable_dir(cfg.srd_dir, "--srd-dir")
    from data_utils.datasets import InstructionDataset
    from distill import dist
    from distill.models import DTYPES, load_model, load_tokenizer

    srd_dir = Path(cfg.srd_dir)  # type: ignore[arg-type]
    env = dist.init_distributed(use_deepspeed=False)
    if env.device.type == "cpu" and cfg.dtype == "fp16":
        raise InputError("--dtype fp16 needs a GPU; use bf16 or fp32 on CPU")
    dataset = InstructionDataset(cfg.data_dir, "train")  # type: ignore[arg-type]
    parts = part_ranges(len(dataset), cfg.part_size)
    settings = reflection_settings(cfg, gen, len(dataset))

    store = reflection_store(srd_dir)
    fix = f"use another --srd-dir, or delete {store.root} and {srd_dir / REFLECTION_FILE} to start over"
    todo = rank0_decides(env, lambda: store.plan(parts, settings, fix))
    log = print if env.is_main else (lambda *a, **k: None)
    log(f"reflection: {len(dataset)} examples in {len(parts)} parts of <= {cfg.part_size}: "
        f"{len(parts) - len(todo)} already done, {len(todo)} to compute on {env.world_size} rank(s)", flush=True)
    t_start = time.time()
    if todo:
        tokenizer = load_tokenizer(cfg.model_path)  # type: ignore[arg-type]
        model = load_model(cfg.model_path, DTYPES[cfg.dtype], peft_path=cfg.peft_path,  # type: ignore[arg-type]
                           merge_adapter=True).to(env.device)
        model.eval()
        compute_parts(store, parts, todo, env,
                      lambda k, within: reflect_part(model, tokenizer, dataset, parts[k], gen, cfg, env,
                                                     seed=part_seed(cfg.seed, k), progress=within),
                      "reflection part", progress_interval=gen.progress_interval)
    summary = {"num_examples": len(dataset), "parts": len(parts), "parts_computed": len(todo),
               "seconds": time.time() - t_start, "path": str(srd_dir / REFLECTION_FILE)}
    if env.is_main:
        records = store.gather(parts)
        write_jsonl_atomic(srd_dir / REFLECTION_FILE, records)
        known = [r["loss"] for r in records if r["loss"] is not None]
        summary.update(mean_rougeL=sum(r["rougeL"] for r in records) / max(len(records), 1),
                       mean_loss=sum(known) / max(len(known), 1), missing_loss=len(records) - len(known))
        log(f"wrote {srd_dir / REFLECTION_FILE}: mean Rouge-L {summary['mean_rougeL']:.2f}, mean loss "
            f"{summary['mean_loss']:.4f}" + (f", {summary['missing_loss']} without target tokens"
                                             if summary["missing_loss"] else ""), flush=True)
    summary = dist.all_gather_objects(summary)[0]
    dist.finish()
    return summary


def parse_reflect_args(argv: Optional[Sequence[str]] = None) -> tuple[ReflectConfig, GenerationConfig]:
    return tuple(parse_configs([ReflectConfig, GenerationConfig], argv,  # type: ignore[return-value]
                               "SRD reflection: the initial student answers and is scored on every training example."))


@exit_on_input_error
def reflect_main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    cfg, gen = parse_reflect_args(argv)
    return run_reflection(cfg, gen)


# ----------------------------------------------------------------------------------------------------------------
# Stage data
# ----------------------------------------------------------------------------------------------------------------
def _id_bound(dtype: np.dtype) -> int:
    """A vocabulary bound that makes the builder pick ``dtype`` again, so stage binaries match their source."""
    return 2**16 if dtype == np.dtype(np.uint16) else 2**32


def raw_lines(path: Path, expected: int) -> list[str]:
    """The non-blank lines of a split's jsonl (newline-terminated); an InputError unless there are ``expected``."""
    with open(path, encoding="utf-8") as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    if len(lines) != expected:
        raise InputError(f"{path} has {len(lines)} records but the binary split has {expected}: re-run the "
                         f"processing tool")
    return lines


def stage_is_current(out_dir: Path, marker: dict[str, Any]) -> bool:
    path = out_dir / STAGE_MARKER
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text(encoding="utf-8")) == marker
    except (OSError, json.JSONDecodeError):
        return False


def stage_marker(src_dir: Path, indices: Sequence[int], stage: int) -> dict[str, Any]:
    """What a stage directory holds; a directory whose marker equals this one is reused as is."""
    return {"stage": stage, "source_train_sha256": split_digest(src_dir, "train"),
            "num_examples": len(indices), "indices": [int(i) for i in indices]}


def write_stage_data(src_dir: Path, indices: Sequence[int], out_dir: Path, stage: int) -> bool:
    """Writes a processed directory holding the ``indices`` examples of ``src_dir``'s train split (in that order) and
    its validation split unchanged (symbolic links). Returns False when ``out_dir`` already holds exactly that.

    ``train_0.bin/.idx`` copy the prompt and response ids, ``train.jsonl`` the matching raw lines; ``meta.json`` is the
    source's with an ``srd`` entry; ``srd_stage.json`` (written last, inside a temp directory renamed into place) marks
    the directory complete.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    marker = stage_marker(src_dir, indices, stage)
    if stage_is_current(out_dir, marker):
        return False
    src = IndexedDataset(split_prefix(src_dir, "train"))
    lines = raw_lines(src_dir / "train.jsonl", len(src))
    bad = [i for i in indices if not 0 <= i < len(src)]
    if bad:
        raise ValueError(f"example index {bad[0]} outside the {len(src)} examples of {src_dir}")

    def fill(tmp: Path) -> None:
        with IndexedDatasetBuilder(tmp / "train_0", _id_bound(src.dtype)) as builder:
            for i in indices:
                builder.add(src.prompt(i), src.response(i))
        with open(tmp / "train.jsonl", "w", encoding="utf-8", newline="") as f:
            f.writelines(lines[i] for i in indices)
        for name in ("valid_0.bin", "valid_0.idx", "valid.jsonl"):
            if (src_dir / name).exists():
                os.symlink((src_dir / name).resolve(), tmp / name)
        meta_src = src_dir / "meta.json"
        meta = json.loads(meta_src.read_text(encoding="utf-8")) if meta_src.is_file() else {}
        meta["srd"] = {"stage": stage, "source": str(src_dir.resolve()), "train_examples": len(indices)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / STAGE_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")

    # Stale contents (other ranking settings would have another directory) are replaced.
    build_dir(out_dir, fill)
    return True


def write_ranking(path: Path, ranked: Sequence[dict[str, Any]], reflection: Sequence[dict[str, Any]],
                  sizes: Sequence[int]) -> None:
    """``ranking.jsonl``: one line per example, easiest first, with its part (0 = easiest) and both metrics."""
    part_of = np.repeat(np.arange(len(sizes)), sizes).tolist()
    write_jsonl_atomic(path, [{"position": p, "part": part_of[p], **r, "rougeL": reflection[r["index"]]["rougeL"],
                               "loss": reflection[r["index"]]["loss"]} for p, r in enumerate(ranked)])
