"""The SRD stage plan: the runner's configuration, each stage's schedule as ``train_distill.py`` flags, the plan file,
and what the stages did — read from their run summaries (``<stage>/run_summary.json``, distill/summary.py) — for the
best checkpoint across stages and the report.

A stage schedule is configuration. Every per-stage value is one flag of the runner that takes one value (all stages)
or one per trained stage, and becomes that stage's ``train_distill.py`` flag (:data:`STAGE_FLAGS`):

    --stage-epochs 8            --stage-iters 500          --stage-lr 1e-4          --stage-lr-min 1e-7
    --stage-lr-schedule cosine  --stage-warmup-iters 0     --stage-kd-ratio 0.8 0.9 1.0
    --stage-eval-interval -1    --stage-save-interval -1   --temperatures 1 1.5 2 (or --temperature-start/-end)

A value not given per stage is the pass-through flag's (``--lr``, ``--kd-ratio``, ...), the same for every stage.

What a stage did is its trainer's own record: a stage is finished when its run summary says it took all the steps it
was launched for (``steps == total_iters``), that length is the one asked for now (``--total-iters``, or the
summary's ``steps_per_epoch`` times ``--epochs``: raising a finished stage's epochs makes it continue), and the
checkpoint of its last step is complete. Before a stage has run its step count is unknown (``null`` in the plan).
The best checkpoint across stages is chosen by the trainer's own rule (:func:`distill.summary.is_better`) over the
stages' ``best`` entries, in stage order (ties keep the earlier stage).

Torch-free, so the runner's ``--help`` and its input errors answer at once.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from distill import srd
from distill.config import (ConfigError, DataConfig, DistillConfig, GenerationConfig, InputError, ModelConfig,
                            TrainConfig, _check, _flag, _opt, add_dataclass_arguments, from_namespace, parse_configs)
from distill.inputs import complete_checkpoints
from distill.summary import is_better, read_summary

PLAN_FILE = "srd_plan.json"
REPORT_FILE = "srd_report.json"
#: Flags the runner sets per stage itself; given by the user they would be silently overridden, so they are refused.
RUNNER_OWNED = {"--temperature-kld": "set per stage by the SRD temperature schedule; use --temperatures or "
                                       "--temperature-start/--temperature-end instead",
                "--stage": "the stage index, set by the runner for each stage"}
#: Resumption is automatic; these are dropped from the pass-through flags.
RESUME_FLAGS = ("--resume", "--no-resume", "--no-overwrite")
#: The per-stage schedule: runner field -> the train_distill.py flag it sets in each stage.
STAGE_FLAGS = {"stage_epochs": "--epochs", "stage_iters": "--total-iters", "stage_lr": "--lr",
               "stage_lr_min": "--lr-min", "stage_lr_schedule": "--lr-schedule",
               "stage_warmup_iters": "--warmup-iters", "stage_kd_ratio": "--kd-ratio",
               "stage_eval_interval": "--eval-interval", "stage_save_interval": "--save-interval"}
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class SRDConfig:
    srd_dir: Optional[str] = _opt(None, "Where the reflection and stage data go (default: <data-dir>/srd/<student>).")
    num_stages: int = _opt(4, "Equal parts the easy -> hard ranking is cut into.")
    keep_stages: Optional[int] = _opt(None, "Stages trained (stage i uses parts 0..i); default num_stages - 1, i.e. "
                                            "the hardest part is dropped.")
    rank_by: Literal["rrf", "rouge", "loss"] = _opt("rrf", "Difficulty: Rouge-L rank, loss rank, or their "
                                                           "reciprocal-rank fusion.")
    rrf_k: float = _opt(60.0, "k of reciprocal-rank fusion: score = 1/(k + r_rouge) + 1/(k + r_loss).")
    rank_ties: Literal["average", "stable"] = _opt("average", "Tied values: 'average' (they share their mean rank; "
                                                              "equal scores in example order) or 'stable' (the "
                                                              "release's stable sorts: a tie keeps the order the "
                                                              "previous sort left, file order first).")
    stratify_by: Optional[str] = _opt(None, "Field of train.jsonl (e.g. category) whose groups are ranked and cut "
                                            "into parts separately, so each group loses only its own hardest "
                                            "examples; default one ranking over all examples.")
    temperatures: Optional[list[float]] = _opt(None, "KD temperature of each trained stage, or one for all "
                                                     "(overrides --temperature-start/--temperature-end).")
    temperature_start: float = _opt(1.0, "Temperature of the first stage (linear schedule).")
    temperature_end: float = _opt(2.0, "Temperature of the last stage (linear schedule).")
    stage_init: Literal["last", "best"] = _opt("last", "Each stage starts from the previous stage's last or best "
                                                       "checkpoint.")
    stage_epochs: Optional[list[int]] = _opt(None, "Epochs of each stage (one value: all stages); default --epochs.")
    stage_iters: Optional[list[int]] = _opt(None, "Optimizer steps of each stage (one value: all stages); overrides "
                                                  "epochs.")
    stage_lr: Optional[list[float]] = _opt(None, "Peak learning rate of each stage (one value: all); default --lr.")
    stage_lr_min: Optional[list[float]] = _opt(None, "Final learning rate of each stage's cosine schedule (one "
                                                     "value: all); default --lr-min.")
    stage_lr_schedule: Optional[list[str]] = _opt(None, "constant or cosine, per stage (one value: all); default "
                                                        "--lr-schedule.")
    stage_warmup_iters: Optional[list[int]] = _opt(None, "Warm-up steps of each stage (one value: all); default "
                                                         "--warmup-iters.")
    stage_kd_ratio: Optional[list[float]] = _opt(None, "kd-ratio of each stage (one value: all); default "
                                                       "--kd-ratio.")
    stage_eval_interval: Optional[list[int]] = _opt(None, "Evaluation interval of each stage in steps (-1: once per "
                                                          "epoch; one value: all); default --eval-interval.")
    stage_save_interval: Optional[list[int]] = _opt(None, "Checkpoint interval of each stage in steps (-1: once per "
                                                          "epoch; one value: all); default --save-interval.")
    reflect_max_new_tokens: Optional[int] = _opt(None, "Reflection answer length (default: --max-new-tokens).")
    reflect_temperature: float = _opt(0.01, "Reflection sampling temperature, top-k 0, top-p 1 (the release's "
                                            "0.01); 0: greedy.")
    reflect_no_repeat_ngram_size: int = _opt(6, "Reflection answers never repeat an n-gram of this size (the "
                                                "release's 6; 0: off).")
    reflect_seed: int = _opt(10, "Reflection sampling seed (the release's 10), apart from the training --seed so "
                                 "runs of several seeds share one reflection.")
    reflect_batch_size: Optional[int] = _opt(None, "Reflection prompts per generation batch (default: "
                                                   "--eval-batch-size).")
    reflect_loss_batch_size: Optional[int] = _opt(None, "Reflection examples per loss forward (default: "
                                                        "--batch-size).")
    reflect_part_size: int = _opt(1000, "Examples per resumable reflection part.")
    reflect_dtype: Optional[Literal["fp32", "bf16", "fp16"]] = _opt(None, "Reflection precision (default: the "
                                                                          "DeepSpeed config's).")
    launcher: Literal["torchrun", "fork"] = _opt("torchrun", "How reflection and stages are started: torchrun "
                                                             "subprocesses, or children of a fork server (one "
                                                             "process).")
    nproc_per_node: int = _opt(1, "Processes (GPUs) per node, per stage and for the reflection.")
    nnodes: int = _opt(1, "Nodes; run the same command on each, with its --node-rank (torchrun only).")
    node_rank: int = _opt(0, "This node's index, 0..nnodes-1; only node 0 writes the plan, stage data and report.")
    master_addr: Optional[str] = _opt(None, "Address of node 0, the same on every node (required with --nnodes > "
                                            "1; default 127.0.0.1).")
    master_port: Optional[int] = _opt(None, "torchrun master port (default: a free one per launch on one node; "
                                            "29500 with --nnodes > 1, where every node must name the same one).")
    node_wait_timeout: float = _opt(1800.0, "Seconds a node other than 0 waits for a file node 0 writes (stage "
                                            "data, its record of a finished step, a stage's final checkpoint).")
    baseline_dir: Optional[str] = _opt(None, "Plain KD run to compare with (default: the only "
                                             "results/<family>/train/kd/*-<type> if there is exactly one).")

    def __post_init__(self) -> None:
        _check(self.num_stages >= 1, "num_stages", f"must be >= 1, got {self.num_stages}")
        _check(self.keep_stages is None or 1 <= self.keep_stages <= self.num_stages, "keep_stages",
               f"must be in 1..{self.num_stages} (--num-stages), got {self.keep_stages}")
        _check(self.rrf_k >= 0, "rrf_k", f"must be >= 0, got {self.rrf_k}")
        _check(self.reflect_temperature >= 0, "reflect_temperature", "must be >= 0 (0: greedy)")
        _check(self.reflect_no_repeat_ngram_size >= 0, "reflect_no_repeat_ngram_size", "must be >= 0 (0: off)")
        _check(self.reflect_part_size > 0, "reflect_part_size", "must be positive")
        _check(self.nproc_per_node >= 1, "nproc_per_node", "must be >= 1")
        _check(not (self.launcher == "fork" and self.nproc_per_node > 1), "launcher",
               "fork runs one process; use --launcher torchrun for --nproc-per-node > 1")
        _check(self.nnodes >= 1, "nnodes", "must be >= 1")
        _check(0 <= self.node_rank < self.nnodes, "node_rank", f"must be in 0..{self.nnodes - 1} (--nnodes), got "
                                                               f"{self.node_rank}")
        _check(self.nnodes == 1 or self.master_addr, "master_addr",
               "is required with --nnodes > 1: the address of node 0, the same on every node")
        _check(not (self.launcher == "fork" and self.nnodes > 1), "launcher",
               "fork runs on this node only; use --launcher torchrun for --nnodes > 1")
        _check(self.node_wait_timeout > 0, "node_wait_timeout", "must be positive")
        checks = {"stage_epochs": (lambda v: v > 0, "values must be positive"),
                  "stage_iters": (lambda v: v > 0, "values must be positive"),
                  "stage_lr": (lambda v: v > 0, "values must be positive"),
                  "stage_lr_min": (lambda v: v >= 0, "values must be >= 0"),
                  "stage_lr_schedule": (lambda v: v in LR_SCHEDULES, f"values must be {' or '.join(LR_SCHEDULES)}"),
                  "stage_warmup_iters": (lambda v: v >= 0, "values must be >= 0"),
                  "stage_kd_ratio": (lambda v: 0.0 <= v <= 1.0, "values must be in [0, 1]"),
                  "stage_eval_interval": (lambda v: v >= -1, "values must be >= 0 steps, or -1 (once per epoch)"),
                  "stage_save_interval": (lambda v: v >= -1, "values must be >= 0 steps, or -1 (once per epoch)")}
        for name, (ok, msg) in checks.items():
            values = getattr(self, name)
            _check(values is None or all(ok(v) for v in values), name, f"{msg}, got {values}")
        _check(self.stage_epochs is None or self.stage_iters is None, "stage_iters",
               "give --stage-epochs or --stage-iters, not both")

    @property
    def trained_stages(self) -> int:
        return srd.default_keep_stages(self.num_stages) if self.keep_stages is None else self.keep_stages


@dataclass
class TrainArgs:
    """The pass-through flags, parsed by train_distill.py's own configuration classes."""
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    gen: GenerationConfig
    distill: DistillConfig


# ----------------------------------------------------------------------------------------------------------------
# Command lines
# ----------------------------------------------------------------------------------------------------------------
def split_argv(argv: Sequence[str], description: Optional[str] = None) -> tuple[SRDConfig, list[str]]:
    """(the runner's flags, every other flag in its original order)."""
    # No prefix matching: a pass-through --temperature must not be taken for --temperatures.
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    add_dataclass_arguments(parser, SRDConfig)
    ns, rest = parser.parse_known_args(list(argv))
    try:
        return from_namespace(SRDConfig, ns), rest
    except ConfigError as e:
        parser.exit(2, f"error: {e}\n")
        raise  # unreachable; parser.exit raises SystemExit


def flag_given(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def drop_flags(argv: Sequence[str], flags: Sequence[str]) -> list[str]:
    """``argv`` without the value-less ``flags``."""
    return [a for a in argv if a not in flags]


def parse_train_argv(argv: Sequence[str]) -> TrainArgs:
    """train_distill.py's parse of ``argv`` (exits with its one-line message on a bad flag)."""
    return TrainArgs(*parse_configs([ModelConfig, DataConfig, TrainConfig, GenerationConfig, DistillConfig],
                                    list(argv), "train_distill.py flags (passed through by tools/srd_run.py)"))


def per_stage(values: Optional[Sequence[Any]], n: int, flag: str) -> list[Any]:
    """One value per trained stage: ``None`` (not given), one value for all, or exactly ``n`` values."""
    if values is None:
        return [None] * n
    if len(values) == 1:
        return [values[0]] * n
    if len(values) != n:
        raise InputError(f"{flag} has {len(values)} values but {n} stages are trained (--num-stages/--keep-stages); "
                         f"give 1 or {n}")
    return list(values)


def stage_schedules(cfg: SRDConfig, n: int) -> list[dict[str, Any]]:
    """Each trained stage's schedule: ``{"temperature": T, "flags": {train_distill.py flag: value}}``, the flags
    holding only the per-stage values given (the others come from the pass-through flags). InputError for a list of
    the wrong length or a temperature <= 0."""
    try:
        temps = srd.temperature_schedule(n, cfg.temperatures, cfg.temperature_start, cfg.temperature_end)
    except ValueError as e:
        raise InputError(str(e)) from None
    values = {flag: per_stage(getattr(cfg, name), n, _flag(name)) for name, flag in STAGE_FLAGS.items()}
    return [{"temperature": temps[i], "flags": {flag: v[i] for flag, v in values.items() if v[i] is not None}}
            for i in range(n)]


def _flag_value(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)  # repr: the shortest text that parses back to the same float


def stage_argv(base: Sequence[str], *, stage: int, init: str, data_dir: str, save: str,
               schedule: dict[str, Any], resume: bool, peft_base: Optional[str], run_name: str) -> list[str]:
    """train_distill.py flags of one stage: the pass-through flags, then the stage's own (last, so they win).

    With a LoRA student (``peft_base`` = the base model) a later stage loads the base and the previous stage's adapter.
    """
    out = list(base)
    if peft_base is not None and stage > 0:
        out += ["--model-path", peft_base, "--peft-path", init]
    else:
        out += ["--model-path", init]
    out += ["--data-dir", data_dir, "--save", save, "--temperature-kld", _flag_value(schedule["temperature"]),
            "--eval-gen", "--run-name", run_name, "--stage", str(stage)]  # --stage: the objective's ctx.stage
    for flag, value in schedule["flags"].items():
        out += [flag, _flag_value(value)]
    if resume:
        out.append("--resume")
    return out


def reflect_argv(cfg: SRDConfig, args: TrainArgs, srd_dir: Path, dtype: str) -> list[str]:
    """tools/srd_reflect.py flags for the initial student (the pretrained ``--model-path``, with ``--peft-path`` when
    one is given), derived from the training flags."""
    out = ["--model-path", str(args.model.model_path), "--data-dir", str(args.data.data_dir), "--srd-dir",
           str(srd_dir), "--dtype", dtype, "--max-length", str(args.data.max_length),
           "--max-prompt-length", str(args.data.max_prompt_length),
           "--loss-batch-size", str(cfg.reflect_loss_batch_size or args.train.batch_size),
           "--part-size", str(cfg.reflect_part_size), "--seed", str(cfg.reflect_seed),
           "--max-new-tokens", str(cfg.reflect_max_new_tokens or args.gen.max_new_tokens),
           "--eval-batch-size", str(cfg.reflect_batch_size or args.gen.eval_batch_size),
           "--no-repeat-ngram-size", str(cfg.reflect_no_repeat_ngram_size)]
    if args.model.peft_path is not None:
        out += ["--peft-path", args.model.peft_path]
    if cfg.reflect_temperature > 0:
        out += ["--do-sample", "--temperature", f"{cfg.reflect_temperature:g}", "--top-k", "0", "--top-p", "1.0"]
    return out


def default_srd_dir(data_dir: str, model_path: str) -> Path:
    """``<data-dir>/srd/<student>``; a checkpoint path ending in ``best`` or a step is named after its run."""
    p = Path(model_path)
    name = p.parent.name if (p.name == "best" or p.name.isdigit()) else p.name
    return Path(data_dir) / "srd" / name


# ----------------------------------------------------------------------------------------------------------------
# What the stages did: their run summaries
# ----------------------------------------------------------------------------------------------------------------
def finished_stage(run: Path, train: TrainConfig) -> Optional[dict[str, Any]]:
    """The run summary of ``run`` when it finished the length ``train`` asks for now, else None: every step it was
    launched for (``steps == total_iters``), that length is ``--total-iters`` or ``steps_per_epoch`` x ``--epochs``,
    and the checkpoint of its last step is complete."""
    s = read_summary(run)
    if s is None or s.get("steps") != s.get("total_iters"):
        return None
    wanted = train.total_iters or s["steps_per_epoch"] * int(train.epochs or 0)
    if s["total_iters"] != wanted or s["steps"] not in complete_checkpoints(run):
        return None
    return s


def _read_args(run: Path) -> dict[str, Any]:
    path = run / "args.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_stats(run: Path) -> dict[str, Any]:
    """What a training run cost and reached, from its run summary (and its settings from ``args.json``): examples
    (distinct), epochs, steps, tokens (non-padding tokens through the student, all ranks), train seconds (optimizer
    steps), the trainer's wall seconds, best and final validation Rouge-L. Values the run did not record are None
    (a run not finished, or made before run summaries existed: ``summary`` False)."""
    s = read_summary(run) or {}
    a = _read_args(run)
    best = s.get("best") or {}
    return {"run": str(run), "summary": bool(s), "kd_ratio": a.get("kd_ratio"), "lr": a.get("lr"),
            "lr_min": a.get("lr_min"), "lr_schedule": a.get("lr_schedule"), "warmup_iters": a.get("warmup_iters"),
            "temperature": a.get("temperature_kld"), "examples": s.get("train_examples"), "epochs": s.get("epochs"),
            "steps": s.get("steps"), "examples_seen": s.get("examples_seen"), "tokens": s.get("tokens"),
            "world_size": s.get("world_size"), "launches": s.get("launches"),
            "train_seconds": s.get("train_seconds"), "trainer_wall_seconds": s.get("wall_seconds"),
            "best_step": best.get("step"),
            "rougeL_best": best.get("value") if best.get("metric") == "valid/rougeL" else None,
            "rougeL_final": (s.get("final") or {}).get("valid/rougeL")}


def find_baseline(cfg: SRDConfig, family: str, kind: str) -> tuple[Optional[Path], str]:
    """The plain KD run to compare with, and a note on how it was found."""
    if cfg.baseline_dir is not None:
        p = Path(cfg.baseline_dir)
        return (p, f"plain KD run {p} (--baseline-dir)") if p.is_dir() else (None, f"no plain KD run at {p} "
                                                                                   f"(--baseline-dir)")
    found = sorted(p for p in Path("results", family, "train", "kd").glob(f"*-{kind}") if p.is_dir())
    if len(found) == 1:
        return found[0], f"plain KD run {found[0]} (the only results/{family}/train/kd/*-{kind})"
    if not found:
        return None, f"no plain KD run at results/{family}/train/kd/*-{kind}"
    return None, f"{len(found)} runs match results/{family}/train/kd/*-{kind}; pass --baseline-dir"


# ----------------------------------------------------------------------------------------------------------------
# Plan, best checkpoint, report
# ----------------------------------------------------------------------------------------------------------------
def plan_settings(cfg: SRDConfig, args: TrainArgs, srd_dir: Path, temps: list[float], sizes: list[int]) -> dict:
    """What fixes a run's stages; resuming with other values would mix two runs in one directory. (The stages'
    lengths, learning rates and kd-ratios may change: a stage's own run directory checks what may change on resume,
    distill/rundir.py.)"""
    return {"type": args.distill.type, "num_stages": cfg.num_stages, "keep_stages": cfg.trained_stages,
            "rank_by": cfg.rank_by, "rrf_k": cfg.rrf_k, "rank_ties": cfg.rank_ties, "stratify_by": cfg.stratify_by,
            "temperatures": temps, "stage_init": cfg.stage_init,
            "model_path": str(Path(args.model.model_path).resolve()),  # type: ignore[arg-type]
            "data_dir": str(Path(args.data.data_dir).resolve()), "srd_dir": str(srd_dir.resolve()),  # type: ignore
            "part_sizes": sizes}


def load_or_create_plan(save: Path, settings: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    path = save / PLAN_FILE
    if path.is_file():
        plan = json.loads(path.read_text(encoding="utf-8"))
        # A plan written before rank ties were a setting ranked with average ties.
        diff = srd.settings_conflict({"rank_ties": "average", **plan.get("settings", {})}, settings)
        if diff:
            raise InputError(f"{path} was made with other settings ({', '.join(diff)} differ); re-run with those, "
                             f"or pass another --save")
        return plan
    return {"settings": settings, "reflection": {"wall_seconds": 0.0}, "stages": stages, "best": None}


def stage_init_path(prev_save: Path, mode: str, prev: dict[str, Any]) -> str:
    """The checkpoint the next stage starts from: the previous stage's last step (``prev``: its run summary), or its
    best checkpoint."""
    step = prev["steps"] if mode == "last" else (prev.get("best") or {}).get("step")
    path = prev_save / str(step)
    if step is None or step not in complete_checkpoints(prev_save):
        what = "last step" if mode == "last" else "best checkpoint"
        raise RuntimeError(f"{path}: the {what} of a finished stage is not a complete checkpoint; delete "
                           f"{prev_save} to retrain it" + (", or use --stage-init last" if mode == "best" else ""))
    return str(path)


def select_best(save: Path, stage_saves: Sequence[Path],
                summaries: Sequence[Optional[dict[str, Any]]]) -> Optional[dict[str, Any]]:
    """Best checkpoint across stages: the stages' own ``best`` (their run summaries), compared in stage order by the
    trainer's rule (distill.summary.is_better: Rouge-L, strictly better, ties keep the earlier). Writes
    ``<save>/best.json`` and a relative ``<save>/best`` link to ``stage_<i>/<step>``."""
    best: Optional[dict[str, Any]] = None
    for i, (run, s) in enumerate(zip(stage_saves, summaries)):
        cand = (s or {}).get("best")
        if cand and cand.get("step") in complete_checkpoints(run) and is_better(cand, best):
            best = {"stage": i, "step": cand["step"], "metric": cand["metric"], "value": cand["value"],
                    "path": str(run / str(cand["step"]))}
    if best is None:
        return None
    srd.write_json_atomic(save / "best.json", best)
    link_tmp = save / "best.tmp"
    link_tmp.unlink(missing_ok=True)
    os.symlink(os.path.join(stage_saves[best["stage"]].name, str(best["step"])), link_tmp)
    os.replace(link_tmp, save / "best")
    return best


def _fmt(v: Any, spec: str = ",") -> str:
    if v is None:
        return "—"
    return format(v, spec)


#: The report table: column, row key, format.
COLUMNS = (("kd-ratio", "kd_ratio", "g"), ("lr", "lr", "g"), ("T", "temperature", "g"), ("epochs", "epochs", ".2f"),
           ("examples", "examples", ","), ("steps", "steps", ","), ("tokens", "tokens", ","),
           ("train s", "train_seconds", ".1f"), ("wall s", "wall_seconds", ".1f"),
           ("Rouge-L best", "rougeL_best", ".2f"), ("final", "rougeL_final", ".2f"))


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["settings"]
    table = Table(title=f"SRD — {report['type']}, {s['num_stages']} parts, {s['keep_stages']} trained, rank by "
                        f"{s['rank_by']} ({s.get('rank_ties', 'average')} ties)")
    table.add_column("run", justify="left")
    for col, _, _ in COLUMNS:
        table.add_column(col, justify="right")
    keys = [k for _, k, _ in COLUMNS]
    refl = {k: None for k in keys}
    refl.update(examples=report["num_examples"], wall_seconds=report["reflection_wall_seconds"])
    rows = [("reflection", refl)] + [(r["name"], r) for r in report["stages"]] + [("SRD total", report["total"])]
    if report.get("baseline"):
        rows.append((report["baseline"]["name"], report["baseline"]))
    for name, row in rows:
        table.add_row(name, *(_fmt(row.get(k), spec) if name != "reflection" or row.get(k) is not None else ""
                              for _, k, spec in COLUMNS))
    Console(width=160).print(table)
    ratio = report.get("vs_baseline")
    if ratio:
        print(f"SRD / plain KD: tokens {_fmt(ratio['tokens'], '.2f')}x, train time "
              f"{_fmt(ratio['train_seconds'], '.2f')}x, Rouge-L {_fmt(ratio['rougeL_delta'], '+.2f')}", flush=True)
    print(f"baseline: {report['baseline_note']}", flush=True)


def build_report(plan: dict[str, Any], stage_saves: Sequence[Path], kind: str,
                 baseline: tuple[Optional[Path], str]) -> dict[str, Any]:
    """The report's data (``<save>/srd_report.json``): one row per stage (its settings as the trainer recorded them,
    what it did as its run summary says, the runner's wall seconds), the SRD total (the reflection's wall time
    included in its wall seconds), and the plain KD run when one is found."""
    rows = []
    for i, (st, run) in enumerate(zip(plan["stages"], stage_saves)):
        s = run_stats(run)
        rows.append({"name": f"stage {i}", **s, "temperature": st["temperature"],
                     "wall_seconds": st.get("wall_seconds")})

    def total(key: str) -> Optional[float]:
        vals = [r[key] for r in rows]
        return None if any(v is None for v in vals) else sum(vals)

    best = plan.get("best") or {}
    refl_wall = plan["reflection"]["wall_seconds"]
    report: dict[str, Any] = {
        "type": kind, "settings": plan["settings"], "num_examples": plan["num_examples"],
        "reflection_wall_seconds": refl_wall, "stages": rows, "best": plan.get("best"),
        # Epochs of stages of different sizes do not add up to anything; the total has none.
        "total": {"name": "SRD total", "examples": rows[-1]["examples"] if rows else None, "epochs": None,
                  "steps": total("steps"), "tokens": total("tokens"), "train_seconds": total("train_seconds"),
                  "wall_seconds": (total("wall_seconds") or 0.0) + refl_wall,
                  "rougeL_best": best.get("value"), "rougeL_final": rows[-1]["rougeL_final"] if rows else None},
        "baseline": None, "baseline_note": baseline[1], "vs_baseline": None}
    if baseline[0] is not None:
        b = run_stats(baseline[0])
        if not b["summary"]:
            report["baseline_note"] += " (it has no run_summary.json: not finished, or made by an older version)"
        report["baseline"] = {"name": f"plain KD ({baseline[0].name})", **b}
        t = report["total"]

        def ratio(key: str) -> Optional[float]:
            return t[key] / b[key] if t[key] is not None and b[key] else None

        report["vs_baseline"] = {"tokens": ratio("tokens"), "train_seconds": ratio("train_seconds"),
                                 "rougeL_delta": (t["rougeL_best"] - b["rougeL_best"]
                                                  if t["rougeL_best"] is not None and b["rougeL_best"] is not None
                                                  else None)}
    return report
