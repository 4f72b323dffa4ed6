"""Chaos: a run SIGKILLed at random (seeded) moments and resumed each time ends exactly where an uninterrupted one does.

* KD (train_distill.py, the tiny GPT-2 student and teacher, 24 steps, a checkpoint every 3): killed while loading,
  during steps and in the middle of saving a checkpoint (a step directory without its trainer_state.json), resumed
  with --resume after each kill. Its final weights are bit-identical to an uninterrupted run's, its metrics log holds
  the same rows (each step once, the same values), and it keeps the same checkpoints.
* SRD reflection (tools/srd_reflect.py): killed while its parts are being written, restarted; the assembled
  reflection equals an uninterrupted one's.

Each run is a process forked from a fork server that imported the training stack once (as the SRD runner's
``--launcher fork`` starts its steps, distill/srd_runner.py), so a kill is a real process dying mid-write, without an
interpreter start-up per attempt. ``CHAOS_SEED`` (environment) picks other moments:
``CHAOS_SEED=7 python -m pytest tests/test_chaos.py``.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from distill import srd_runner as srd_run  # its fork launcher's child side and preload list
from tests.conftest import tiny_train_args

SEED = int(os.environ.get("CHAOS_SEED", "0"))
STATE_FILE = "trainer_state.json"
TOTAL, SAVE_EVERY, EVAL_EVERY = 24, 3, 8
#: What differs between two runs of the same computation: its speed and the process's memory.
UNTIMED = ("train/tokens_per_s", "train/peak_mem_mb", "train/prepare_share")  # measured times: not comparable


@pytest.fixture(scope="module", autouse=True)
def own_fork_server() -> Iterator[None]:
    """A fork server of this module's own, stopped afterwards: its children write to the stdout it was started with,
    so a later test that captures its fork children's output (tests/test_srd.py, capfd) needs a fresh one."""
    from multiprocessing import forkserver

    forkserver._forkserver._stop()
    yield
    forkserver._forkserver._stop()


def _child(entry: str, argv: list[str]) -> None:
    """A fork-server child: one thread (the tiny models gain nothing from two, and two runs share the cores)."""
    import torch

    torch.set_num_threads(1)
    srd_run._run_entry(entry, argv)


def start(entry: str, argv: list[str]) -> mp.process.BaseProcess:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(srd_run.ForkLauncher.PRELOAD)  # only when the server starts (first use)
    proc = ctx.Process(target=_child, args=(entry, argv))
    proc.start()
    return proc


def finish(proc: mp.process.BaseProcess, timeout: float = 120) -> None:
    t0 = time.monotonic()
    proc.join(timeout)
    print(f"chaos: a run to the end took {time.monotonic() - t0:.1f} s")
    assert proc.exitcode == 0, f"exit code {proc.exitcode}"


def wait_until(cond: Callable[[], bool], proc: mp.process.BaseProcess, timeout: float, poll: float = 0.002) -> bool:
    """True once ``cond()``; False if ``proc`` ended first."""
    deadline = time.monotonic() + timeout
    while not cond():
        if not proc.is_alive():
            return False
        assert time.monotonic() < deadline, "timed out"
        time.sleep(poll)
    return True


def kill(proc: mp.process.BaseProcess) -> None:
    if proc.pid is not None and proc.is_alive():
        os.kill(proc.pid, signal.SIGKILL)
    proc.join()


# ------------------------------------------------------------------------------------------------------------------
# KD


def steps_in(save: Path) -> tuple[list[int], list[int]]:
    """(complete, incomplete) step directories. ``save`` may come and go while a first launch starts: its preflight
    makes it to probe that it is writable and removes it again (distill/preflight.py)."""
    done, partial = [], []
    try:
        entries = list(save.iterdir())
    except FileNotFoundError:
        entries = []
    for p in entries:
        if p.name.isdigit() and p.is_dir():
            (done if (p / STATE_FILE).is_file() else partial).append(int(p.name))
    return sorted(done), sorted(partial)


def train_rows(save: Path) -> int:
    try:
        return sum('"train/ce"' in line for line in (save / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def launches_resumed(save: Path) -> int:
    """How many launches have finished resuming (each logs one of these lines before its first step)."""
    try:
        log = (save / "log.txt").read_text()
    except OSError:
        return 0
    return log.count("] resumed from ") + log.count("] --resume: no complete checkpoint")


def metrics(save: Path) -> list[dict]:
    rows = [json.loads(line) for line in (save / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in UNTIMED} for r in rows]


def test_kd_killed_at_random_and_resumed_equals_uninterrupted(tiny_models: dict, processed_tiny: Path,
                                                              tmp_path: Path) -> None:
    from safetensors.torch import load_file

    def argv(save: Path, *extra: str) -> list[str]:
        return tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, save, "--teacher-model-path",
                               str(tiny_models["gpt2"]["teacher"]), "--type", "fkl", "--kd-ratio", "0.5",
                               "--total-iters", str(TOTAL), "--save-interval", str(SAVE_EVERY), "--eval-interval",
                               str(EVAL_EVERY), "--keep-optimizer-states", "2", "--batch-size", "4", "--lr", "1e-3",
                               "--dev-num", "4", "--eval-batch-size", "4", *extra)

    ref, run = tmp_path / "uninterrupted", tmp_path / "chaos"
    finish(start("train", argv(ref)))

    rng = random.Random(SEED)
    plan = ["load", "step", "save", "step", "save"]
    rng.shuffle(plan)
    kills: list[tuple[str, int, list[int]]] = []  # (what, newest complete step, incomplete steps) after each kill
    mid_save = 0
    launches = 0
    while plan and launches < 10:
        launches += 1
        resumed_before = launches_resumed(run)
        proc = start("train", argv(run, *(["--resume"] if launches > 1 else [])))
        what = plan.pop(0)
        try:
            if what == "load":  # while importing, loading the models, resuming
                time.sleep(rng.uniform(0.0, 1.5))
                alive = proc.is_alive()
            else:
                # This launch's own steps and saves: after its resume has removed what the last kill left.
                alive = launches == 1 or wait_until(lambda: launches_resumed(run) > resumed_before, proc, 60)
                if alive and what == "step":
                    target = train_rows(run) + rng.randint(1, 4)
                    alive = wait_until(lambda: train_rows(run) >= target, proc, 60)
                    time.sleep(rng.uniform(0.0, 0.03))
                elif alive:  # a step directory that exists without its completion marker: a save under way
                    alive = wait_until(lambda: bool(steps_in(run)[1]), proc, 60, poll=0.0005)
        finally:
            kill(proc)
        assert alive, f"the run ended before the {what} kill"  # the plan leaves it steps enough
        done, partial = steps_in(run)
        kills.append((what, done[-1] if done else 0, partial))
        if what == "save":
            if partial:
                mid_save += 1
            else:  # the save completed between the look and the kill: try again
                plan.append("save")
    finish(start("train", argv(run, "--resume")))
    assert mid_save >= 2, kills  # two kills landed inside a save

    # The same weights, bit for bit.
    a, b = load_file(str(ref / str(TOTAL) / "model.safetensors")), load_file(str(run / str(TOTAL) /
                                                                                    "model.safetensors"))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a), kills
    # Each step's rows once, in order, with the same values (train and validation).
    got, want = metrics(run), metrics(ref)
    assert [r["step"] for r in got] == [r["step"] for r in want], kills
    assert got == want, kills
    assert [r["step"] for r in want if "train/ce" in r] == list(range(1, TOTAL + 1))
    # The same checkpoints: every one complete, the newest two with optimizer state, best on the same step.
    saved, partial = steps_in(ref)
    assert set(saved) - set(range(SAVE_EVERY, TOTAL + 1, SAVE_EVERY)) <= set(range(EVAL_EVERY, TOTAL, EVAL_EVERY))
    assert not partial  # every multiple of SAVE_EVERY, and an evaluation's new best
    assert steps_in(run) == (saved, [])
    assert sorted(p.parent.name for p in run.glob("[0-9]*/ds_state")) == [str(TOTAL - SAVE_EVERY), str(TOTAL)]
    best = {k: json.loads((d / "best.json").read_text()) for k, d in (("ref", ref), ("run", run))}
    assert {k: v for k, v in best["run"].items() if k != "path"} == {k: v for k, v in best["ref"].items()
                                                                     if k != "path"}
    assert os.readlink(run / "best") == os.readlink(ref / "best")
    # Every launch after a checkpoint existed resumed from the newest complete one.
    log = (run / "log.txt").read_text()
    for _, newest, _ in kills:
        if newest:
            assert f"resumed from {run / str(newest)} (step {newest})" in log, (newest, kills)


# ------------------------------------------------------------------------------------------------------------------
# SRD reflection


def test_srd_reflection_killed_while_writing_parts_equals_uninterrupted(tiny_models: dict, processed_tiny: Path,
                                                                         tmp_path: Path) -> None:
    from distill import srd

    def argv(srd_dir: Path) -> list[str]:
        return ["--model-path", str(tiny_models["gpt2"]["student"]), "--data-dir", str(processed_tiny),
                "--srd-dir", str(srd_dir), "--part-size", "20", "--max-new-tokens", "4", "--eval-batch-size", "20",
                "--loss-batch-size", "20"]

    ref, run = tmp_path / "uninterrupted", tmp_path / "chaos"
    finish(start("reflect", argv(ref)))
    n_parts = len(list((ref / srd.REFLECTION_PARTS).glob("part_*.jsonl")))
    assert n_parts == 10

    def parts() -> int:
        return len(list((run / srd.REFLECTION_PARTS).glob("part_*.jsonl"))) if (run / srd.REFLECTION_PARTS).is_dir() \
            else 0

    rng = random.Random(SEED)
    seen = []
    for target in sorted(rng.sample(range(1, n_parts - 1), 2)):
        proc = start("reflect", argv(run))
        try:
            alive = wait_until(lambda: parts() >= target, proc, 60)
            # Somewhere inside the next part: a part takes ~0.1 s on a fast CPU, so at most half of that (within up
            # to 0.2 s the last two parts and the merge could finish before the kill landed: seen once).
            time.sleep(rng.uniform(0.0, 0.05))
        finally:
            kill(proc)
        assert alive and not (run / srd.REFLECTION_FILE).exists()
        seen.append(parts())
    finish(start("reflect", argv(run)))
    assert seen[0] < n_parts and seen == sorted(seen), seen
    assert srd.load_reflection(run / srd.REFLECTION_FILE, 200) == srd.load_reflection(ref / srd.REFLECTION_FILE, 200)
    assert not [p for p in (run / srd.REFLECTION_PARTS).iterdir() if not p.name.startswith("part_")
                and p.name != "settings.json"]  # no half-written part left behind
