"""SRD end to end: reflection -> ranking -> stage data -> curriculum KD stages -> best checkpoint -> report.

    python tools/srd_run.py --num-stages 4 [--keep-stages 3] [--rank-by rrf] [--rrf-k 60] [--rank-ties stable] \\
        [--temperatures 1 1.5 2] [--stage-kd-ratio 0.8 0.9 1.0] [--stage-lr 1e-4] [--stage-lr-min 1e-7] \\
        [--stage-epochs 8] [--stage-eval-interval -1] [--stage-init last] \\
        --model-path checkpoints/gpt2-base --teacher-model-path results/gpt2/train/sft/gpt2-xlarge/best \\
        --data-dir processed_data/dolly/full/gpt2 --save results/gpt2/train/srd/gpt2-base-tfkl --type tfkl ...

The runner's own flags are listed by ``--help``; every other flag goes through unchanged to each stage's
``train_distill.py`` (it is parsed by that entry point's parser first, so a typo stops the run before any work).
The runner then appends, last (so they win), per stage: ``--model-path`` (stage 0: the given student; later: the
previous stage's last or best checkpoint), ``--data-dir`` (the stage's data), ``--save <save>/stage_<i>``,
``--temperature-kld`` (the schedule), ``--eval-gen`` (stages are compared by validation Rouge-L), ``--run-name``, the
stage's schedule (``--stage-*`` flags: ``--epochs``, ``--total-iters``, ``--lr``, ``--lr-min``, ``--lr-schedule``,
``--warmup-iters``, ``--kd-ratio``, ``--eval-interval``, ``--save-interval``; distill/srd_plan.py), and ``--resume``
when the stage's directory holds an earlier attempt (its settings must match: distill/rundir.py). Reflection and
stages run as ``python -m distill.launch --nproc_per_node N`` (torchrun) subprocesses (``--launcher torchrun``) or, for
one process, in a child forked from a fork server that imported the training stack once (``--launcher fork``: no
interpreter start-up per step; tests use it).

Several nodes (``--nnodes N --node-rank R --master-addr HOST``, docs/multinode.md): the same command runs on every
node, whose runners each start their node's part of every torchrun (the rendezvous at HOST:--master-port starts a step
on all nodes together). Every node computes the same plan; only node 0 writes files (plan, ranking, stage data, best,
report), and on a filesystem shared by the nodes the others wait for what they read: node 0's stage data before the
stages, and after each step node 0's record that it finished (and the stage's run summary and final checkpoint).

Re-running the same command resumes: a finished reflection, current stage data and finished stages (their run
summaries, distill/summary.py) are skipped, and an interrupted stage continues from its newest checkpoint. Outputs,
under ``--save``: ``srd_plan.json`` (settings, stages, sizes, schedules, data dirs, status), ``stage_<i>/`` (each a
normal training run), ``best.json`` + ``best`` (the best checkpoint by Rouge-L across stages) and ``srd_report.json``
(the table printed at the end, with a plain-KD run of the same --type for comparison when one is found). See
docs/srd.md.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from data_utils.indexed_dataset import IndexedDataset
from data_utils.splits import require_split, split_prefix
from distill import LAUNCHER_ENV, srd
from distill.config import InputError, exit_on_input_error
from distill.inputs import complete_checkpoints  # noqa: F401  (srd_runner.complete_checkpoints, as before)
# The plan's names are the runner's too (srd_runner.SRDConfig, .split_argv, ...): one module to import.
from distill.srd_plan import (PLAN_FILE, REPORT_FILE, RESUME_FLAGS, RUNNER_OWNED, SRDConfig, TrainArgs,  # noqa: F401
                              build_report, default_srd_dir, drop_flags, find_baseline, finished_stage, flag_given,
                              load_or_create_plan, parse_train_argv, per_stage, plan_settings, print_report,
                              reflect_argv, run_stats, select_best, stage_argv, stage_init_path, stage_schedules)
from distill.srd_plan import split_argv as _split_argv

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY_SCRIPTS = {"reflect": "tools/srd_reflect.py", "train": "train_distill.py"}
DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
             "ROLE_RANK", "TORCHELASTIC_RUN_ID")


class StepFailed(RuntimeError):
    """A launched step (reflection or a stage) exited with an error; its own output says why. ``code``: the exit
    status of the runner — the step's own for a bad input (2) or a diverged run (3), so a script or scheduler
    calling the runner tells them from a crash (1)."""

    def __init__(self, message: str, rc: int = 1):
        super().__init__(message)
        self.code = rc if rc in (2, 3) else 1


def split_argv(argv: Sequence[str]) -> tuple[SRDConfig, list[str]]:
    """(the runner's flags, every other flag in its original order); ``--help`` shows this module's usage."""
    return _split_argv(argv, __doc__)


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
        if str(REPO_ROOT) not in sys.path:  # train_distill.py lives at the repository root
            sys.path.insert(0, str(REPO_ROOT))
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
# The run
# ----------------------------------------------------------------------------------------------------------------
def check_inputs(cfg: SRDConfig, args: TrainArgs, passthrough: Sequence[str]) -> None:
    """Everything that can be checked before any model is loaded; InputError / FileNotFoundError, one line."""
    from distill.losses import DIVERGENCES
    from distill.models import check_model_dir

    if flag_given(passthrough, "--overwrite"):
        raise InputError(f"--overwrite: the SRD runner continues a run in --save by re-running the same command; "
                         f"to start over, delete {args.train.save} (and the reflection in --srd-dir, for a new one)")
    for flag, why in RUNNER_OWNED.items():
        if flag_given(passthrough, flag):
            raise InputError(f"{flag} is {why}")
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
    schedules = stage_schedules(cfg, n_stages)
    temps = [s["temperature"] for s in schedules]
    try:
        num_examples = len(IndexedDataset(split_prefix(args.data.data_dir, "train")))  # type: ignore[arg-type]
        groups = read_groups(Path(args.data.data_dir), cfg.stratify_by, num_examples)  # type: ignore[arg-type]
        sizes = (srd.part_sizes(num_examples, cfg.num_stages) if groups is None else
                 srd.stratified_part_sizes(groups, cfg.num_stages))
    except ValueError as e:
        raise InputError(str(e)) from None
    save = Path(args.train.save)  # type: ignore[arg-type]
    srd_dir = Path(cfg.srd_dir) if cfg.srd_dir else default_srd_dir(args.data.data_dir,  # type: ignore[arg-type]
                                                                    args.model.model_path)  # type: ignore[arg-type]
    stage_root = srd_dir / (f"{cfg.rank_by}-n{cfg.num_stages}" + (f"-k{cfg.rrf_k:g}" if cfg.rank_by == "rrf" else "")
                            + ("-stable" if cfg.rank_ties == "stable" else "")
                            + (f"-by-{cfg.stratify_by}" if cfg.stratify_by else ""))
    stage_saves = [save / f"stage_{i}" for i in range(n_stages)]
    leader = cfg.node_rank == 0  # the only node that writes; see wait_for
    run_name = args.train.run_name or save.name
    peft_base = str(args.model.model_path) if args.model.peft == "lora" else None
    ends = [sum(sizes[: i + 1]) for i in range(n_stages)]
    # Every stage's flags are checked by train_distill.py's parser now, not after hours of earlier stages; what each
    # stage trains with (its length decides when it is finished) is that parse.
    stage_cfgs = [parse_train_argv(stage_argv(passthrough, stage=i, init=str(args.model.model_path),
                                              data_dir=str(stage_root / f"stage_{i}"), save=str(stage_saves[i]),
                                              schedule=schedules[i], resume=False, peft_base=None, run_name=run_name))
                  for i in range(n_stages)]
    stages = [{"stage": i, "parts": i + 1, "examples": ends[i], "temperature": temps[i],
               "schedule": schedules[i]["flags"], "data_dir": str(stage_root / f"stage_{i}"),
               "save": str(stage_saves[i]), "total_iters": None, "init": None, "status": "pending",
               "wall_seconds": 0.0} for i in range(n_stages)]
    settings = plan_settings(cfg, args, srd_dir, temps, sizes)
    plan = load_or_create_plan(save, settings, stages)
    for old, new in zip(plan["stages"], stages):  # the schedule may change between attempts (lengths, lr, ...)
        old["schedule"] = new["schedule"]
        old.pop("planned_steps", None)  # a plan of an older version; steps now come from the run summary
        old.setdefault("total_iters", None)
    plan["num_examples"] = num_examples
    plan["argv"] = list(sys.argv[1:] if argv is None else argv)

    def write_plan() -> None:
        if leader:
            srd.write_json_atomic(save / PLAN_FILE, plan)

    if leader:
        from distill.preflight import check_writable_dir
        from distill.rundir import RunLock

        check_writable_dir(str(save), "--save")  # made, with a probe file: one line if it cannot be written
        locks.append(RunLock(save).acquire())
    # Started by scripts/lib.sh: this runner, and with it every step it starts, ends when that shell is killed.
    from distill.dist import die_with_launcher

    die_with_launcher()
    write_plan()
    launch = launcher or make_launcher(cfg)
    timeout = cfg.node_wait_timeout

    # 1. Reflection, by the initial student (--model-path, as the user gave it).
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
        ranked = srd.rank_examples(rouge, losses, cfg.rank_by, cfg.rrf_k, cfg.rank_ties)
    else:  # sizes known
        ranked, _ = srd.stratified_ranking(rouge, losses, groups, cfg.num_stages, cfg.rank_by, cfg.rrf_k,
                                           cfg.rank_ties)
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

    # 4. Curriculum stages. What a stage did is its trainer's run summary.
    summaries: list[Optional[dict[str, Any]]] = []
    for i, st in enumerate(plan["stages"]):
        done = finished_stage(stage_saves[i], stage_cfgs[i].train)
        if done is not None:
            st.update(status="done", total_iters=done["total_iters"])
            summaries.append(done)
            print(f"stage {i}: finished ({done['steps']} steps, {stage_saves[i] / str(done['steps'])}); skipped",
                  flush=True)
            continue
        init = (str(args.model.model_path) if i == 0 else
                stage_init_path(stage_saves[i - 1], cfg.stage_init, summaries[i - 1]))  # type: ignore[arg-type]
        st.update(init=init, status="running")
        # An interrupted stage continues, from its newest checkpoint or (killed before its first) from scratch.
        resume = stage_saves[i].is_dir() and any(stage_saves[i].iterdir())
        s_argv = stage_argv(passthrough, stage=i, init=init, data_dir=st["data_dir"], save=st["save"],
                            schedule=schedules[i], resume=resume, peft_base=peft_base, run_name=f"{run_name}-stage{i}")
        st["argv"] = s_argv
        write_plan()
        flags = " ".join(f"{k} {v}" for k, v in schedules[i]["flags"].items())
        print(f"stage {i}: {st['examples']} examples, temperature {st['temperature']:g}{', ' + flags if flags else ''}"
              f", from {init}" + (" (resuming)" if resume else ""), flush=True)
        t0 = time.time()
        rc = launch("train", s_argv)
        st["wall_seconds"] += time.time() - t0
        if rc == 0 and not leader:  # node 0's rank 0 writes the run summary and the final checkpoint
            wait_for(node0_finished(save, i, f"stage {i}"), f"its record of the finished stage {i} in "
                                                            f"{save / PLAN_FILE}", timeout)
            wait_for(lambda i=i: finished_stage(stage_saves[i], stage_cfgs[i].train) is not None,
                     f"the run summary and final checkpoint of stage {i} in {stage_saves[i]}", timeout)
        done = finished_stage(stage_saves[i], stage_cfgs[i].train) if rc == 0 else None
        if rc == 0 and done is None:
            rc_note = (f"stage {i} exited without a finished run summary ({stage_saves[i] / 'run_summary.json'} with "
                       f"every step and a complete final checkpoint)")
            st["status"] = "failed (no finished run summary)"
            write_plan()
            raise StepFailed(f"{rc_note}; re-run the same command to resume from {stage_saves[i]}")
        st["status"] = "done" if rc == 0 else f"failed (exit code {rc})"
        if done is not None:
            st["total_iters"] = done["total_iters"]
        write_plan()
        if rc != 0:
            raise StepFailed(f"stage {i} failed (exit code {rc}); fix the cause and re-run the same command to "
                             f"resume from {stage_saves[i]}", rc)
        summaries.append(done)

    if not leader:
        print(f"node {cfg.node_rank}: every stage is done; node 0 picks the best checkpoint and writes "
              f"{save / REPORT_FILE}", flush=True)
        return {"node_rank": cfg.node_rank, "stages": plan["stages"]}

    # 5. Best checkpoint across stages (the trainer's rule over the stages' own best), then the report.
    plan["best"] = select_best(save, stage_saves, summaries)
    write_plan()
    from distill.models import model_type

    family = args.model.model_type or model_type(str(args.model.model_path))
    report = build_report(plan, stage_saves, args.distill.type, find_baseline(cfg, family, args.distill.type))
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
