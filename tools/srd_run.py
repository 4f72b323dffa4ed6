#!/usr/bin/env python
"""SRD end to end: reflection -> ranking -> stage data -> curriculum KD stages -> best checkpoint -> report.

    python tools/srd_run.py --num-stages 4 [--keep-stages 3] [--rank-by rrf] [--rrf-k 60] [--stratify-by category] \\
        [--temperatures 1.0 1.5 2.0 | --temperature-start 1.0 --temperature-end 2.0] [--stage-init last] \\
        --model-path checkpoints/gpt2-base --teacher-model-path results/gpt2/train/sft/gpt2-xlarge/best \\
        --data-dir processed_data/dolly/full/gpt2 --save results/gpt2/train/srd/gpt2-base-tfkl --type tfkl \\
        --epochs 10 ...

The runner's own flags are listed by ``--help``; every other flag goes through unchanged to each stage's
``train_distill.py`` (it is parsed by that entry point's parser first, so a typo stops the run before any work).
The runner then appends, last (so they win), per stage: ``--model-path`` (stage 0: the given student; later: the
previous stage's last or best checkpoint), ``--data-dir`` (the stage's data), ``--save <save>/stage_<i>``,
``--temperature-kld`` (the schedule), ``--eval-gen`` (stages are compared by validation Rouge-L), ``--run-name``,
``--epochs``/``--total-iters`` from ``--stage-epochs``/``--stage-iters``, and ``--resume`` when the stage's
directory holds an earlier attempt (its settings must match: distill/rundir.py). Reflection and stages run as ``python -m distill.launch --nproc_per_node N`` (torchrun) subprocesses
(``--launcher torchrun``) or, for one process, in a child forked from a fork server that imported the training stack
once (``--launcher fork``: no interpreter start-up per step; tests use it).

Several nodes (``--nnodes N --node-rank R --master-addr HOST``, docs/multinode.md): the same command runs on every
node, whose runners each start their node's part of every torchrun (the rendezvous at HOST:--master-port starts a step
on all nodes together). Every node computes the same plan; only node 0 writes files (plan, ranking, stage data, best,
report), and on a filesystem shared by the nodes the others wait for what they read: node 0's stage data before the
stages, and after each step node 0's record that it finished (and the stage's final checkpoint).

Re-running the same command resumes: a finished reflection, current stage data and stages whose final checkpoint
is complete are skipped, and an interrupted stage continues from its newest checkpoint. Outputs, under ``--save``:
``srd_plan.json`` (settings, stages, sizes, temperatures, data dirs, status), ``stage_<i>/`` (each a normal training
run), ``best.json`` + ``best`` (the best checkpoint by Rouge-L across stages) and ``srd_report.json`` (the table printed
at the end, with a plain-KD run of the same --type for comparison when one is found). See docs/srd.md.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/srd_run.py`: make the repo's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from data_utils.splits import require_split, split_prefix  # noqa: E402
from data_utils.indexed_dataset import IndexedDataset  # noqa: E402
from distill import LAUNCHER_ENV, srd  # noqa: E402
from distill.config import (ConfigError, DataConfig, DistillConfig, GenerationConfig, InputError,  # noqa: E402
                            ModelConfig, TrainConfig, _check, _opt, add_dataclass_arguments, exit_on_input_error,
                            from_namespace, parse_configs)

PLAN_FILE = "srd_plan.json"
REPORT_FILE = "srd_report.json"
ENTRY_SCRIPTS = {"reflect": "tools/srd_reflect.py", "train": "train_distill.py"}
#: Flags the runner sets per stage itself; given by the user they would be silently overridden, so they are refused.
RUNNER_OWNED = ("--temperature-kld",)
#: Resumption is automatic; these are dropped from the pass-through flags.
RESUME_FLAGS = ("--resume", "--no-resume", "--no-overwrite")
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
             "ROLE_RANK", "TORCHELASTIC_RUN_ID")


class StepFailed(RuntimeError):
    """A launched step (reflection or a stage) exited with an error; its own output says why. ``code``: the exit
    status of the runner — the step's own for a bad input (2) or a diverged run (3), so a script or scheduler
    calling the runner tells them from a crash (1)."""

    def __init__(self, message: str, rc: int = 1):
        super().__init__(message)
        self.code = rc if rc in (2, 3) else 1


@dataclass
class SRDConfig:
    srd_dir: Optional[str] = _opt(None, "Where the reflection and stage data go (default: <data-dir>/srd/<student>).")
    num_stages: int = _opt(4, "Equal parts the easy -> hard ranking is cut into.")
    keep_stages: Optional[int] = _opt(None, "Stages trained (stage i uses parts 0..i); default num_stages - 1, i.e. "
                                            "the hardest part is dropped.")
    rank_by: Literal["rrf", "rouge", "loss"] = _opt("rrf", "Difficulty: Rouge-L rank, loss rank, or their "
                                                           "reciprocal-rank fusion.")
    rrf_k: float = _opt(60.0, "k of reciprocal-rank fusion: score = 1/(k + r_rouge) + 1/(k + r_loss).")
    stratify_by: Optional[str] = _opt(None, "Field of train.jsonl (e.g. category) whose groups are ranked and cut "
                                            "into parts separately, so each group loses only its own hardest "
                                            "examples; default one ranking over all examples.")
    temperatures: Optional[list[float]] = _opt(None, "KD temperature of each trained stage (overrides "
                                                     "--temperature-start/--temperature-end).")
    temperature_start: float = _opt(1.0, "Temperature of the first stage (linear schedule).")
    temperature_end: float = _opt(2.0, "Temperature of the last stage (linear schedule).")
    stage_init: Literal["last", "best"] = _opt("last", "Each stage starts from the previous stage's last or best "
                                                       "checkpoint.")
    stage_epochs: Optional[list[int]] = _opt(None, "Epochs of each stage (one value: all stages); default --epochs.")
    stage_iters: Optional[list[int]] = _opt(None, "Optimizer steps of each stage (one value: all stages); overrides "
                                                  "epochs.")
    reflect_max_new_tokens: Optional[int] = _opt(None, "Reflection answer length (default: --max-new-tokens).")
    reflect_temperature: float = _opt(0.0, "Reflection sampling temperature (0: greedy).")
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
        for name in ("stage_epochs", "stage_iters"):
            values = getattr(self, name)
            _check(values is None or all(v > 0 for v in values), name, "values must be positive")
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
def split_argv(argv: Sequence[str]) -> tuple[SRDConfig, list[str]]:
    """(the runner's flags, every other flag in its original order)."""
    # No prefix matching: a pass-through --temperature must not be taken for --temperatures.
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
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


def per_stage(values: Optional[Sequence[int]], n: int, flag: str) -> list[Optional[int]]:
    """One value per trained stage: ``None`` (not given), one value for all, or exactly ``n`` values."""
    if values is None:
        return [None] * n
    if len(values) == 1:
        return [values[0]] * n
    if len(values) != n:
        raise InputError(f"{flag} has {len(values)} values but {n} stages are trained; give 1 or {n}")
    return list(values)


def stage_argv(base: Sequence[str], *, stage: int, init: str, data_dir: str, save: str, temperature: float,
               epochs: Optional[int], total_iters: Optional[int], resume: bool, peft_base: Optional[str],
               run_name: str) -> list[str]:
    """train_distill.py flags of one stage: the pass-through flags, then the stage's own (last, so they win).

    With a LoRA student (``peft_base`` = the base model) a later stage loads the base and the previous stage's adapter.
    """
    out = list(base)
    if peft_base is not None and stage > 0:
        out += ["--model-path", peft_base, "--peft-path", init]
    else:
        out += ["--model-path", init]
    out += ["--data-dir", data_dir, "--save", save, "--temperature-kld", f"{temperature:g}", "--eval-gen",
            "--run-name", run_name]
    if epochs is not None:
        out += ["--epochs", str(epochs)]
    if total_iters is not None:
        out += ["--total-iters", str(total_iters)]
    if resume:
        out.append("--resume")
    return out


def reflect_argv(cfg: SRDConfig, args: TrainArgs, srd_dir: Path, dtype: str) -> list[str]:
    """tools/srd_reflect.py flags for the initial student, derived from the training flags."""
    out = ["--model-path", str(args.model.model_path), "--data-dir", str(args.data.data_dir), "--srd-dir",
           str(srd_dir), "--dtype", dtype, "--max-length", str(args.data.max_length),
           "--max-prompt-length", str(args.data.max_prompt_length),
           "--loss-batch-size", str(cfg.reflect_loss_batch_size or args.train.batch_size),
           "--part-size", str(cfg.reflect_part_size), "--seed", str(args.train.seed),
           "--max-new-tokens", str(cfg.reflect_max_new_tokens or args.gen.max_new_tokens),
           "--eval-batch-size", str(cfg.reflect_batch_size or args.gen.eval_batch_size)]
    if args.model.peft_path is not None:
        out += ["--peft-path", args.model.peft_path]
    if cfg.reflect_temperature > 0:
        out += ["--do-sample", "--temperature", f"{cfg.reflect_temperature:g}", "--top-k", "0", "--top-p", "1.0"]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------------------------
Launcher = Callable[[str, Sequence[str]], int]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: torchrun's master port when several nodes must name the same one and none was given.
MULTINODE_PORT = 29500


class TorchrunLauncher:
    """Runs an entry point as ``python -m distill.launch --nproc_per_node N`` (torchrun) on this node; with ``nnodes``
    > 1 as this node's (``node_rank``) part of a run on all of them, which meet at ``master_addr:master_port``."""

    def __init__(self, nproc: int, master_port: Optional[int] = None, python: str = sys.executable, nnodes: int = 1,
                 node_rank: int = 0, master_addr: Optional[str] = None):
        self.nproc, self.master_port, self.python = nproc, master_port, python
        self.nnodes, self.node_rank, self.master_addr = nnodes, node_rank, master_addr

    def command(self, entry: str, argv: Sequence[str]) -> list[str]:
        nodes = ["--nnodes", "1"] if self.nnodes == 1 else ["--nnodes", str(self.nnodes), "--node_rank",
                                                              str(self.node_rank)]
        # Several nodes: a fixed port, since every node's runner must give its torchrun the same one.
        port = self.master_port or (free_port() if self.nnodes == 1 else MULTINODE_PORT)
        # distill/launch.py: torchrun that exits with a failed rank's code (2: bad input) instead of 1 and a traceback.
        return [self.python, "-m", "distill.launch", *nodes, "--nproc_per_node", str(self.nproc),
                "--master_addr", self.master_addr or "127.0.0.1", "--master_port", str(port),
                str(REPO_ROOT / ENTRY_SCRIPTS[entry]), *argv]

    def __call__(self, entry: str, argv: Sequence[str]) -> int:
        cmd = self.command(entry, argv)
        # A caller that itself ran as a rank (RANK, MASTER_PORT, ...) must not hand that to torchrun's workers.
        env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
        # Its workers end when this runner does (distill/dist.py die_with_launcher), not only when torchrun does.
        env[LAUNCHER_ENV] = str(os.getpid())
        # As the shell launchers do: the node's cores shared out over the processes.
        env.setdefault("OMP_NUM_THREADS", str(max((os.cpu_count() or 1) // self.nproc, 1)))
        print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
        return subprocess.run(cmd, env=env).returncode


def _run_entry(entry: str, argv: list[str]) -> None:
    """Child side of :class:`ForkLauncher`: a world of one on a fresh port, then the entry point's ``main``."""
    os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))
    # The fork server exits when the runner does; this child ends with it instead of training on as an orphan.
    for var in (LAUNCHER_ENV, "TORCHELASTIC_RUN_ID"):
        os.environ.pop(var, None)
    from distill.dist import die_with_parent

    die_with_parent(os.getppid())
    if entry == "train":
        import train_distill

        train_distill.main(argv)
    else:
        srd.reflect_main(argv)


class ForkLauncher:
    """Runs an entry point as a world of one in a child forked from multiprocessing's fork server, a clean process
    that imports the training stack once: no interpreter start-up per stage, and nothing of this process leaks into
    the child — not its threads, not a process group it may hold (a plain fork of a process that trained in-process
    inherits a gloo group whose worker threads are gone, and DeepSpeed's cached groups with it)."""

    # The training stack itself: the entry points import it lazily (fast --help), so name it here.
    PRELOAD = ["deepspeed", "transformers", "distill.trainer", "distill.objectives", "distill.metrics",
               "distill.models", "train_distill", "distill.srd"]

    def __call__(self, entry: str, argv: Sequence[str]) -> int:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(self.PRELOAD)  # takes effect when the server starts (first launch)
        print(f"+ [fork] {ENTRY_SCRIPTS[entry]} {shlex.join(argv)}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        proc = ctx.Process(target=_run_entry, args=(entry, list(argv)))
        proc.start()
        proc.join()
        return int(proc.exitcode if proc.exitcode is not None else 1)


def make_launcher(cfg: SRDConfig) -> Launcher:
    if cfg.launcher == "fork":
        return ForkLauncher()
    return TorchrunLauncher(cfg.nproc_per_node, cfg.master_port, nnodes=cfg.nnodes, node_rank=cfg.node_rank,
                            master_addr=cfg.master_addr)


# ----------------------------------------------------------------------------------------------------------------
# Several nodes: node 0 writes, the others wait for it
# ----------------------------------------------------------------------------------------------------------------
#: Seconds between two looks at a file node 0 writes.
WAIT_POLL = 2.0


def wait_for(ready: Callable[[], bool], what: str, timeout: float) -> None:
    """Returns once ``ready()``; a node other than 0 waiting for ``what`` node 0 writes (StepFailed after
    ``timeout`` seconds)."""
    if ready():
        return
    print(f"waiting for node 0: {what}", flush=True)
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise StepFailed(f"node 0 did not write {what} within {timeout:g} s (--node-wait-timeout); is it running "
                             f"the same command, on a filesystem this node shares?")
        time.sleep(WAIT_POLL)


def node0_finished(save: Path, stage: Optional[int], what: str) -> Callable[[], bool]:
    """Whether node 0's plan records the reflection (``stage`` None) or that stage as done: node 0's runner, and with
    it its torchrun and the rendezvous store it hosts, is past the step. It marked the step running before it
    launched, i.e. before any node could finish it, so a status left from an earlier run cannot pass for it."""
    def ready() -> bool:
        try:
            plan = json.loads((save / PLAN_FILE).read_text(encoding="utf-8"))
            status = (plan["reflection"] if stage is None else plan["stages"][stage]).get("status")
        except (OSError, json.JSONDecodeError, KeyError, IndexError):
            return False
        if isinstance(status, str) and status.startswith("failed"):
            raise StepFailed(f"{what} {status} on node 0; fix the cause and re-run the same command on every node")
        return status == "done"

    return ready


# ----------------------------------------------------------------------------------------------------------------
# Reading training runs
# ----------------------------------------------------------------------------------------------------------------
def complete_checkpoints(run: Path) -> list[int]:
    from distill.trainer import complete_checkpoints as steps

    return steps(run)


def logged_metric(run: Path, key: str = "valid/rougeL") -> dict[int, float]:
    """``{step: value}`` of ``key`` in ``<run>/metrics.jsonl`` (a resumed run appends: a step's last value wins)."""
    out: dict[int, float] = {}
    path = run / "metrics.jsonl"
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                if key in rec:
                    out[int(rec["step"])] = float(rec[key])
    return out


_DONE = re.compile(r"\] done: (\{.*\})\s*$")
_WORLD = re.compile(r"world size (\d+)")


def log_facts(run: Path) -> tuple[list[dict[str, Any]], Optional[int]]:
    """(the summaries a run logged on finishing, one per launch; its world size) from ``<run>/log.txt``."""
    path = run / "log.txt"
    if not path.is_file():
        return [], None
    done, world = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _DONE.search(line)
        if m:
            try:
                done.append(json.loads(m.group(1)))
            except json.JSONDecodeError:
                pass
        w = _WORLD.search(line)
        if w:
            world = int(w.group(1))
    return done, world


def example_tokens(data_dir: Path, max_length: int) -> "Any":
    """Tokens one training example puts through the model: int64 [N] = attention-mask sum of the collated row,
    ``min(prompt + response + EOS, max_length) - 1`` (the collator shifts inputs and labels by one)."""
    import numpy as np

    sizes = IndexedDataset(split_prefix(data_dir, "train")).sizes.astype(np.int64)
    return np.maximum(np.minimum(sizes + 1, max_length) - 1, 0)


def planned_steps(num_examples: int, world: int, train: TrainConfig) -> int:
    """Optimizer steps train_distill.py takes on ``num_examples`` (its own micro-batch stream decides)."""
    from distill.trainer import MicroBatchStream

    if train.total_iters:
        return train.total_iters
    stream = MicroBatchStream(range(num_examples), None, train.batch_size, train.seed, 0, world)
    return max(stream.batches_per_epoch // train.gradient_accumulation_steps, 1) * int(train.epochs)  # type: ignore


def trained_tokens(tokens: "Any", steps: int, batch_size: int, grad_acc: int, seed: int, world: int,
                   lengths: Optional["Any"] = None) -> int:
    """Instruction tokens a run of ``steps`` optimizer steps trained on, summed over ranks, found by replaying the
    trainer's own (seeded, deterministic) micro-batch order — with ``lengths`` (the split's example sizes) when it
    ran with --group-by-length; an LM-data term (--lm-data-dir) is not counted."""
    from distill.trainer import MicroBatchStream

    grouping = {} if lengths is None else {"lengths": lengths}
    total = 0
    for rank in range(world):
        stream = MicroBatchStream(tokens, lambda items: int(sum(items)), batch_size, seed, rank, world, **grouping)
        total += sum(next(stream) for _ in range(steps * grad_acc))
    return total


def run_stats(run: Path, world: Optional[int] = None) -> dict[str, Any]:
    """What a finished training run cost and reached: examples, steps, tokens, train seconds, Rouge-L."""
    steps = complete_checkpoints(run)
    rouge = logged_metric(run)
    done, logged_world = log_facts(run)
    stats: dict[str, Any] = {"run": str(run), "steps": steps[-1] if steps else 0, "examples": None, "tokens": None,
                             "train_seconds": sum(float(d.get("train_seconds", 0.0)) for d in done) if done else None,
                             "rougeL_best": max(rouge.values()) if rouge else None,
                             "rougeL_final": rouge.get(steps[-1]) if steps else None}
    args_path = run / "args.json"
    if args_path.is_file():
        a = json.loads(args_path.read_text(encoding="utf-8"))
        data_dir = Path(a.get("data_dir") or "")
        if split_prefix(data_dir, "train").with_suffix(".idx").is_file():
            tokens = example_tokens(data_dir, int(a["max_length"]))
            sizes = IndexedDataset(split_prefix(data_dir, "train")).sizes if a.get("group_by_length") else None
            stats["examples"] = int(len(tokens))
            stats["tokens"] = trained_tokens(tokens, stats["steps"], int(a["batch_size"]),
                                             int(a["gradient_accumulation_steps"]), int(a["seed"]),
                                             world or logged_world or 1, lengths=sizes)
    return stats


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
    """What fixes a run's stages; resuming with other values would mix two runs in one directory."""
    return {"type": args.distill.type, "num_stages": cfg.num_stages, "keep_stages": cfg.trained_stages,
            "rank_by": cfg.rank_by, "rrf_k": cfg.rrf_k, "stratify_by": cfg.stratify_by, "temperatures": temps,
            "stage_init": cfg.stage_init,
            "model_path": str(Path(args.model.model_path).resolve()),  # type: ignore[arg-type]
            "data_dir": str(Path(args.data.data_dir).resolve()), "srd_dir": str(srd_dir.resolve()),  # type: ignore
            "part_sizes": sizes}


def load_or_create_plan(save: Path, settings: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    path = save / PLAN_FILE
    if path.is_file():
        plan = json.loads(path.read_text(encoding="utf-8"))
        diff = srd.settings_conflict(plan.get("settings", {}), settings)
        if diff:
            raise InputError(f"{path} was made with other settings ({', '.join(diff)} differ); re-run with those, "
                             f"or pass another --save")
        return plan
    return {"settings": settings, "reflection": {"wall_seconds": 0.0}, "stages": stages, "best": None}


def stage_init_path(prev_save: Path, mode: str) -> str:
    """The checkpoint the next stage starts from: the previous stage's newest complete one, or its ``best``."""
    if mode == "best":
        link = prev_save / "best"
        if not link.exists():
            raise RuntimeError(f"{link} missing although the stage finished; run tools/select_best_checkpoint.py "
                               f"{prev_save} or use --stage-init last")
        return str(link.resolve())
    steps = complete_checkpoints(prev_save)
    if not steps:
        raise RuntimeError(f"{prev_save} has no complete checkpoint although the stage finished")
    return str(prev_save / str(steps[-1]))


def select_best(save: Path, stage_saves: Sequence[Path]) -> Optional[dict[str, Any]]:
    """Best checkpoint by logged validation Rouge-L over every stage (ties: the earliest); writes ``<save>/best.json``
    and a relative ``<save>/best`` link to ``stage_<i>/<step>``."""
    best: Optional[dict[str, Any]] = None
    for i, run in enumerate(stage_saves):
        complete = set(complete_checkpoints(run))
        for step, value in sorted(logged_metric(run).items()):
            if step in complete and (best is None or value > best["value"]):
                best = {"stage": i, "step": step, "metric": "valid/rougeL", "value": value,
                        "path": str(run / str(step))}
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


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"SRD — {report['type']}, {report['settings']['num_stages']} parts, "
                        f"{report['settings']['keep_stages']} trained, rank by {report['settings']['rank_by']}")
    for col in ("run", "T", "examples", "steps", "tokens", "train s", "wall s", "Rouge-L best", "final"):
        table.add_column(col, justify="left" if col == "run" else "right")
    table.add_row("reflection", "", _fmt(report["num_examples"]), "", "", "",
                  _fmt(report["reflection_wall_seconds"], ".1f"), "", "")
    for row in report["stages"] + [report["total"]] + ([report["baseline"]] if report.get("baseline") else []):
        temp = _fmt(row["temperature"], "g") if "temperature" in row else ""
        table.add_row(row["name"], temp, _fmt(row["examples"]), _fmt(row["steps"]), _fmt(row["tokens"]),
                      _fmt(row["train_seconds"], ".1f"), _fmt(row.get("wall_seconds"), ".1f"),
                      _fmt(row["rougeL_best"], ".2f"), _fmt(row.get("rougeL_final"), ".2f"))
    ratio = report.get("vs_baseline")
    Console(width=140).print(table)
    if ratio:
        print(f"SRD / plain KD: tokens {_fmt(ratio['tokens'], '.2f')}x, train time "
              f"{_fmt(ratio['train_seconds'], '.2f')}x, Rouge-L {_fmt(ratio['rougeL_delta'], '+.2f')}", flush=True)
    print(f"baseline: {report['baseline_note']}", flush=True)


def build_report(plan: dict[str, Any], save: Path, stage_saves: Sequence[Path], world: int, kind: str,
                 baseline: tuple[Optional[Path], str]) -> dict[str, Any]:
    rows = []
    for i, (st, run) in enumerate(zip(plan["stages"], stage_saves)):
        s = run_stats(run, world)
        rows.append({"name": f"stage {i}", "temperature": st["temperature"], **s,
                     "wall_seconds": st.get("wall_seconds")})

    def total(key: str) -> Optional[float]:
        vals = [r[key] for r in rows]
        return None if any(v is None for v in vals) else sum(vals)

    best = plan.get("best") or {}
    report: dict[str, Any] = {
        "type": kind, "settings": plan["settings"], "num_examples": plan["num_examples"],
        "reflection_wall_seconds": plan["reflection"]["wall_seconds"], "stages": rows, "best": plan.get("best"),
        "total": {"name": "SRD total", "examples": rows[-1]["examples"] if rows else None, "steps": total("steps"),
                  "tokens": total("tokens"), "train_seconds": total("train_seconds"),
                  "wall_seconds": (total("wall_seconds") or 0.0) + plan["reflection"]["wall_seconds"],
                  "rougeL_best": best.get("value"), "rougeL_final": rows[-1]["rougeL_final"] if rows else None},
        "baseline": None, "baseline_note": baseline[1], "vs_baseline": None}
    if baseline[0] is not None:
        b = run_stats(baseline[0])
        report["baseline"] = {"name": f"plain KD ({baseline[0].name})", **b}
        t = report["total"]

        def ratio(key: str) -> Optional[float]:
            return t[key] / b[key] if t[key] is not None and b[key] else None

        report["vs_baseline"] = {"tokens": ratio("tokens"), "train_seconds": ratio("train_seconds"),
                                 "rougeL_delta": (t["rougeL_best"] - b["rougeL_best"]
                                                  if t["rougeL_best"] is not None and b["rougeL_best"] is not None
                                                  else None)}
    return report


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------
def default_srd_dir(data_dir: str, model_path: str) -> Path:
    """``<data-dir>/srd/<student>``; a checkpoint path ending in ``best`` or a step is named after its run."""
    p = Path(model_path)
    name = p.parent.name if (p.name == "best" or p.name.isdigit()) else p.name
    return Path(data_dir) / "srd" / name


def check_inputs(cfg: SRDConfig, args: TrainArgs, passthrough: Sequence[str]) -> None:
    """Everything that can be checked before any model is loaded; InputError / FileNotFoundError, one line."""
    from distill.losses import DIVERGENCES
    from distill.models import check_model_dir

    if flag_given(passthrough, "--overwrite"):
        raise InputError(f"--overwrite: the SRD runner continues a run in --save by re-running the same command; "
                         f"to start over, delete {args.train.save} (and the reflection in --srd-dir, for a new one)")
    for flag in RUNNER_OWNED:
        if flag_given(passthrough, flag):
            raise InputError(f"{flag} is set per stage by the SRD temperature schedule; use --temperatures or "
                             f"--temperature-start/--temperature-end instead")
    spec = DIVERGENCES[args.distill.type]
    if not spec.uses_temperature:
        temp_kinds = sorted(k for k, s in DIVERGENCES.items() if s.uses_temperature)
        raise InputError(f"--type {args.distill.type} ignores the KD temperature, so the SRD schedule would do "
                         f"nothing; use a temperature kind ({', '.join(temp_kinds)}), e.g. --type t{spec.name}")
    check_model_dir(args.model.model_path, "--model-path")
    check_model_dir(args.distill.teacher_model_path, "--teacher-model-path")
    if args.data.data_dir is None:
        raise InputError("--data-dir is required (the processed training data, e.g. processed_data/dolly/full/gpt2)")
    require_split(args.data.data_dir, "train")
    require_split(args.data.data_dir, "valid")
    # What each step would find only after its models loaded (distill/preflight.py): a DeepSpeed JSON that does not
    # parse or carries an optimizer/scheduler section, a truncated or corrupted binary.
    from distill import preflight

    preflight.read_ds_config(args.train.deepspeed_config)
    preflight.check_training_splits(args.data.data_dir, args.data.dev_num)
    if not (Path(args.data.data_dir) / "train.jsonl").is_file():
        raise InputError(f"--data-dir {args.data.data_dir}: train.jsonl not found (the references Rouge-L needs); "
                         f"re-run tools/process_data_dolly.py into that directory")


def read_groups(data_dir: Path, field: Optional[str], num_examples: int) -> Optional[list[str]]:
    """The ``field`` value of every training record (``--stratify-by``), or None without the flag. Read before the
    reflection, so a field the data lacks stops the run at once."""
    if field is None:
        return None
    path = data_dir / "train.jsonl"
    groups = []
    for n, line in enumerate(srd.raw_lines(path, num_examples), 1):
        value = json.loads(line).get(field)
        if not isinstance(value, (str, int)) or isinstance(value, bool) or value == "":
            raise InputError(f"--stratify-by {field}: record {n} of {path} has no {field} value ({value!r}); "
                             f"pass a field every record has (e.g. category), or leave the flag out")
        groups.append(str(value))
    return groups


def run_srd(argv: Optional[Sequence[str]] = None, launcher: Optional[Launcher] = None) -> dict[str, Any]:
    """The whole pipeline; returns the report (also in ``<save>/srd_report.json``) — on a node other than 0, which
    writes nothing, its node rank and the stages. Node 0 holds ``<save>/run.lock`` meanwhile (distill/rundir.py):
    a second runner on the same --save is refused."""
    locks: list[Any] = []
    try:
        return _run_srd(argv, launcher, locks)
    finally:
        for lock in locks:
            lock.release()


def _run_srd(argv: Optional[Sequence[str]], launcher: Optional[Launcher], locks: list[Any]) -> dict[str, Any]:
    cfg, rest = split_argv(sys.argv[1:] if argv is None else argv)
    passthrough = drop_flags(rest, RESUME_FLAGS)
    args = parse_train_argv(passthrough)
    check_inputs(cfg, args, passthrough)
    n_stages = cfg.trained_stages
    try:
        temps = srd.temperature_schedule(n_stages, cfg.temperatures, cfg.temperature_start, cfg.temperature_end)
        num_examples = len(IndexedDataset(split_prefix(args.data.data_dir, "train")))  # type: ignore[arg-type]
        groups = read_groups(Path(args.data.data_dir), cfg.stratify_by, num_examples)  # type: ignore[arg-type]
        sizes = (srd.part_sizes(num_examples, cfg.num_stages) if groups is None else
                 srd.stratified_part_sizes(groups, cfg.num_stages))
    except ValueError as e:
        raise InputError(str(e)) from None
    epochs = per_stage(cfg.stage_epochs, n_stages, "--stage-epochs")
    iters = per_stage(cfg.stage_iters, n_stages, "--stage-iters")
    save = Path(args.train.save)  # type: ignore[arg-type]
    srd_dir = Path(cfg.srd_dir) if cfg.srd_dir else default_srd_dir(args.data.data_dir,  # type: ignore[arg-type]
                                                                    args.model.model_path)  # type: ignore[arg-type]
    stage_root = srd_dir / (f"{cfg.rank_by}-n{cfg.num_stages}" + (f"-k{cfg.rrf_k:g}" if cfg.rank_by == "rrf" else "")
                            + (f"-by-{cfg.stratify_by}" if cfg.stratify_by else ""))
    stage_saves = [save / f"stage_{i}" for i in range(n_stages)]
    world = cfg.nproc_per_node * cfg.nnodes if cfg.launcher == "torchrun" else 1
    leader = cfg.node_rank == 0  # the only node that writes; see wait_for
    run_name = args.train.run_name or save.name
    peft_base = str(args.model.model_path) if args.model.peft == "lora" else None
    ends = [sum(sizes[: i + 1]) for i in range(n_stages)]
    # Every stage's flags are checked by train_distill.py's parser now, not after hours of earlier stages.
    stage_cfgs = [parse_train_argv(stage_argv(passthrough, stage=i, init=str(args.model.model_path),
                                              data_dir=str(stage_root / f"stage_{i}"), save=str(stage_saves[i]),
                                              temperature=temps[i], epochs=epochs[i], total_iters=iters[i],
                                              resume=False, peft_base=None, run_name=run_name))
                  for i in range(n_stages)]
    stages = [{"stage": i, "parts": i + 1, "examples": ends[i], "temperature": temps[i],
               "data_dir": str(stage_root / f"stage_{i}"), "save": str(stage_saves[i]),
               "planned_steps": planned_steps(ends[i], world, stage_cfgs[i].train), "init": None,
               "status": "pending", "wall_seconds": 0.0} for i in range(n_stages)]
    settings = plan_settings(cfg, args, srd_dir, temps, sizes)
    plan = load_or_create_plan(save, settings, stages)
    for old, new in zip(plan["stages"], stages):  # step counts follow the current epochs/iterations flags
        old["planned_steps"] = new["planned_steps"]
    plan["num_examples"] = num_examples
    plan["argv"] = list(sys.argv[1:] if argv is None else argv)

    def write_plan() -> None:
        if leader:
            srd.write_json_atomic(save / PLAN_FILE, plan)

    if leader:
        from distill.rundir import RunLock

        from distill.preflight import check_writable_dir

        check_writable_dir(str(save), "--save")  # made, with a probe file: one line if it cannot be written
        locks.append(RunLock(save).acquire())
    # Started by scripts/lib.sh: this runner, and with it every step it starts, ends when that shell is killed.
    from distill.dist import die_with_launcher

    die_with_launcher()
    write_plan()
    launch = launcher or make_launcher(cfg)
    timeout = cfg.node_wait_timeout

    # 1. Reflection.
    dtype = cfg.reflect_dtype or _ds_dtype(args.train.deepspeed_config)
    r_argv = reflect_argv(cfg, args, srd_dir, dtype)
    r_cfg, r_gen = srd.parse_reflect_args(r_argv)
    r_settings = srd.reflection_settings(r_cfg, r_gen, num_examples)
    if srd.reflection_is_complete(srd_dir, r_settings):
        print(f"reflection: {srd_dir / srd.REFLECTION_FILE} is complete; skipped", flush=True)
    else:
        plan["reflection"]["status"] = "running"
        write_plan()
        t0 = time.time()
        rc = launch("reflect", r_argv)
        plan["reflection"]["wall_seconds"] += time.time() - t0
        plan["reflection"]["status"] = "done" if rc == 0 else f"failed (exit code {rc})"
        write_plan()
        if rc != 0:
            raise StepFailed(f"reflection failed (exit code {rc}); fix the cause and re-run the same command "
                             f"(finished parts are kept)", rc)
        if not leader:
            wait_for(node0_finished(save, None, "the reflection"), f"its record of the finished reflection in "
                                                                    f"{save / PLAN_FILE}", timeout)
            wait_for(lambda: srd.reflection_is_complete(srd_dir, r_settings), str(srd_dir / srd.REFLECTION_FILE),
                     timeout)

    # 2. Ranking and 3. stage data.
    reflection = srd.load_reflection(srd_dir / srd.REFLECTION_FILE, num_examples)
    rouge, losses = [r["rougeL"] for r in reflection], [r["loss"] for r in reflection]
    if groups is None:
        ranked = srd.rank_examples(rouge, losses, cfg.rank_by, cfg.rrf_k)
    else:
        ranked, _ = srd.stratified_ranking(rouge, losses, groups, cfg.num_stages, cfg.rank_by, cfg.rrf_k)  # sizes known
    if leader:
        srd.write_ranking(stage_root / srd.RANKING_FILE, ranked, reflection, sizes)
    order = [r["index"] for r in ranked]
    for i, idx in enumerate(srd.stage_index_lists(order, cfg.num_stages, n_stages, sizes)):
        out = stage_root / f"stage_{i}"
        if leader:
            built = srd.write_stage_data(Path(args.data.data_dir), idx, out, i)  # type: ignore[arg-type]
            note = "written" if built else "current; kept"
        else:  # the same ranking here, so node 0's directory must hold exactly these examples
            marker = srd.stage_marker(Path(args.data.data_dir), idx, i)  # type: ignore[arg-type]
            wait_for(lambda out=out, marker=marker: srd.stage_is_current(out, marker), f"stage {i} data in {out}",
                     timeout)
            note = "node 0's"
        print(f"stage {i} data: {len(idx)} examples in {out} ({note})", flush=True)
    plan["ranking"] = str(stage_root / srd.RANKING_FILE)

    # 4. Curriculum stages.
    for i, st in enumerate(plan["stages"]):
        done = complete_checkpoints(stage_saves[i])
        if done and done[-1] >= st["planned_steps"]:
            st["status"] = "done"
            print(f"stage {i}: final checkpoint {stage_saves[i] / str(done[-1])} is complete; skipped", flush=True)
            continue
        init = str(args.model.model_path) if i == 0 else stage_init_path(stage_saves[i - 1], cfg.stage_init)
        st.update(init=init, status="running")
        # An interrupted stage continues, from its newest checkpoint or (killed before its first) from scratch.
        resume = stage_saves[i].is_dir() and any(stage_saves[i].iterdir())
        s_argv = stage_argv(passthrough, stage=i, init=init, data_dir=st["data_dir"], save=st["save"],
                            temperature=st["temperature"], epochs=epochs[i], total_iters=iters[i], resume=resume,
                            peft_base=peft_base, run_name=f"{run_name}-stage{i}")
        st["argv"] = s_argv
        write_plan()
        print(f"stage {i}: {st['examples']} examples, temperature {st['temperature']:g}, from {init}"
              + (" (resuming)" if resume else ""), flush=True)
        t0 = time.time()
        rc = launch("train", s_argv)
        st["wall_seconds"] += time.time() - t0
        st["status"] = "done" if rc == 0 else f"failed (exit code {rc})"
        write_plan()
        if rc != 0:
            raise StepFailed(f"stage {i} failed (exit code {rc}); fix the cause and re-run the same command to "
                             f"resume from {stage_saves[i]}", rc)
        if not leader:  # node 0's rank 0 saved the final checkpoint the next stage starts from
            wait_for(node0_finished(save, i, f"stage {i}"), f"its record of the finished stage {i} in "
                                                            f"{save / PLAN_FILE}", timeout)
            wait_for(lambda i=i, st=st: (complete_checkpoints(stage_saves[i]) or [0])[-1] >= st["planned_steps"],
                     f"the final checkpoint of stage {i} in {stage_saves[i]}", timeout)

    if not leader:
        print(f"node {cfg.node_rank}: every stage is done; node 0 picks the best checkpoint and writes "
              f"{save / REPORT_FILE}", flush=True)
        return {"node_rank": cfg.node_rank, "stages": plan["stages"]}

    # 5. Best checkpoint across stages, then the report.
    plan["best"] = select_best(save, stage_saves)
    write_plan()
    from distill.models import model_type

    family = args.model.model_type or model_type(str(args.model.model_path))
    report = build_report(plan, save, stage_saves, world, args.distill.type,
                          find_baseline(cfg, family, args.distill.type))
    srd.write_json_atomic(save / REPORT_FILE, report)
    print_report(report)
    if plan["best"]:
        print(f"best: stage {plan['best']['stage']} step {plan['best']['step']} (Rouge-L {plan['best']['value']:.2f})"
              f" -> {save / 'best'}", flush=True)
    return report


def _ds_dtype(path: Optional[str]) -> str:
    """Reflection precision matching training: the DeepSpeed config's bf16/fp16, else fp32."""
    if path is None:
        return "fp32"
    from distill.hardware import ds_config_precision
    from distill.preflight import read_ds_config

    return ds_config_precision(read_ds_config(path))


@exit_on_input_error
def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    try:
        return run_srd(argv)
    except StepFailed as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(e.code) from None


if __name__ == "__main__":
    main()
