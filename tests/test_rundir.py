"""One run per directory (distill/rundir.py) and no orphans (distill/dist.py die_with_launcher).

The refusals happen before any model loads, so they are checked on run directories made here the way a run makes
them (args.json from the entry point's own parser) — in-process, and once on the command line, where the answer is
exit status 2 and one line in well under the time torch takes to import. The orphan tests start real launchers
(scripts/lib.sh's launch, torchrun) in their own process groups, SIGKILL only the launcher, and time how long the
processes it started outlive it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from distill import rundir
from distill.config import DataConfig, DistillConfig, GenerationConfig, ModelConfig, TrainConfig, parse_configs, to_dict
from tests.conftest import REPO_ROOT, tiny_train_args

SFT_CLASSES = [ModelConfig, DataConfig, TrainConfig, GenerationConfig]
KD_CLASSES = [*SFT_CLASSES, DistillConfig]


# ------------------------------------------------------------------------------------------------------------------
# helpers


def sft_argv(tiny_models: dict, data: Path, save: Path, *extra: str) -> list[str]:
    return tiny_train_args(tiny_models["gpt2"]["student"], data, save, "--total-iters", "20", "--lr", "1e-3",
                           "--save-interval", "10", *extra)


def kd_argv(tiny_models: dict, data: Path, save: Path, *extra: str) -> list[str]:
    return sft_argv(tiny_models, data, save, "--teacher-model-path", str(tiny_models["gpt2"]["teacher"]),
                    "--type", "fkl", *extra)


def make_run(save: Path, argv: list[str], classes: list[type], steps: tuple[int, ...] = (10,),
             incomplete: tuple[int, ...] = (15,)) -> Path:
    """A run directory as the trainer leaves it after saving ``steps`` and being killed while saving
    ``incomplete``: args.json exactly as RunLogger writes it (from the entry point's parser), logs, step dirs."""
    configs = parse_configs(classes, argv)
    save.mkdir(parents=True)
    (save / "args.json").write_text(json.dumps(to_dict(*configs), indent=2, default=str))
    (save / "log.txt").write_text("[00:00:00] parameters: ...\n")
    (save / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "train/ce": 1.0}) + "\n" for s in range(1, 16)))
    for s in steps:
        (save / str(s) / "ds_state").mkdir(parents=True)
        (save / str(s) / "config.json").write_text("{}")
        (save / str(s) / "trainer_state.json").write_text(json.dumps({"step": s, "complete": True}))
    for s in incomplete:
        (save / str(s)).mkdir()
        (save / str(s) / "config.json").write_text("{}")
    (save / "best.json").write_text(json.dumps({"step": steps[-1]}))
    (save / "best").symlink_to(str(steps[-1]))
    (save / "runs").mkdir()
    return save


def listing(d: Path) -> dict[str, str]:
    """Every path under ``d`` with a digest of what it is (file contents, link target), to assert nothing changed."""
    out = {}
    for p in sorted(d.rglob("*")):
        key = str(p.relative_to(d))
        out[key] = ("link:" + os.readlink(p)) if p.is_symlink() else ("dir" if p.is_dir() else p.read_text())
    return out


def refused(main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line an entry point stops with (exit status 2, no traceback)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def claim(argv: list[str], classes: list[type] = SFT_CLASSES):
    configs = parse_configs(classes, argv)
    train = configs[2]
    return rundir.claim(train, to_dict(*configs), rundir.field_defaults(classes))


@pytest.fixture()
def holder(tmp_path: Path) -> Iterator[callable]:
    """Starts a process that takes a directory's lock and holds it until killed; yields a starter, kills them all."""
    procs: list[subprocess.Popen] = []

    def start(save: Path) -> subprocess.Popen:
        code = ("import sys, time; from pathlib import Path; from distill.rundir import RunLock; "
                "RunLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(120)")
        proc = subprocess.Popen([sys.executable, "-c", code, str(save)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                text=True, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


# ------------------------------------------------------------------------------------------------------------------
# a directory that holds a run


def test_new_run_into_a_run_directory_is_refused_on_the_command_line(tiny_models: dict, processed_tiny: Path,
                                                                     tmp_path: Path,
                                                                     subprocess_env: dict[str, str]) -> None:
    """The reported problem: a new run without --resume silently reused another run's directory."""
    save = make_run(tmp_path / "run", kd_argv(tiny_models, processed_tiny, tmp_path / "run"), KD_CLASSES)
    before = listing(save)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "train_distill.py", *kd_argv(tiny_models, processed_tiny, save)],
                          cwd=REPO_ROOT, env=subprocess_env, capture_output=True, text=True, timeout=60)
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0] == (f"error: --save {save} already holds a run (checkpoints at step 10; args.json, best, "
                        f"best.json, log.txt, metrics.jsonl, runs/): pass --resume to continue it or "
                        f"--overwrite to start over")
    assert took < 10, took  # decided before torch, transformers or DeepSpeed load
    assert listing(save) == {**before, "run.lock": ""}  # nothing changed; the lock file stays, released


def test_resume_with_other_settings_is_refused_naming_each(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The reported problem: a changed --lr / --seed / --type on --resume went unnoticed."""
    import train_distill
    import train_sft

    save = make_run(tmp_path / "kd", kd_argv(tiny_models, processed_tiny, tmp_path / "kd"), KD_CLASSES)
    before = listing(save)
    err = refused(train_distill.main, kd_argv(tiny_models, processed_tiny, save, "--resume", "--lr", "2e-3",
                                              "--seed", "11", "--type", "rkl"), capsys)
    assert err.startswith(f"error: --save {save} --resume: the stored run ({save / 'args.json'}) has other "
                          f"settings — --seed: stored 10, now 11; --lr: stored 0.001, now 0.002; --type: stored fkl, "
                          f"now rkl; resume with the stored values, or start a new run (another --save, or "
                          f"--overwrite). Only "), err
    assert "--total-iters" in err and "--eval-interval" in err  # what may change is said too
    # The same directory through the other entry point: the KD settings cannot be carried over.
    err = refused(train_sft.main, sft_argv(tiny_models, processed_tiny, save, "--resume"), capsys)
    assert "--teacher-model-path: stored " in err and "now not an option of this entry point" in err
    assert "--type: stored fkl, now not an option" in err and "--lr" not in err
    # A path written another way is the same setting.
    rel = os.path.relpath(processed_tiny)
    lock = claim(kd_argv(tiny_models, Path(rel), save, "--resume"), KD_CLASSES)
    lock.release()
    assert listing(save) == {**before, "run.lock": ""}


def test_resume_may_change_only_the_documented_settings(tiny_models: dict, processed_tiny: Path,
                                                        tmp_path: Path) -> None:
    save = make_run(tmp_path / "run", sft_argv(tiny_models, processed_tiny, tmp_path / "run"), SFT_CLASSES)
    allowed = ["--total-iters", "40", "--eval-interval", "5", "--save-interval", "5", "--log-interval", "7",
               "--keep-optimizer-states", "3", "--report-to", "none", "--run-name", "x", "--progress-interval", "5",
               "--eval-batch-size", "3", "--num-workers", "1", "--gradient-checkpointing", "--max-bad-steps", "9"]
    claim(sft_argv(tiny_models, processed_tiny, save, "--resume", *allowed)).release()
    for flag, value in (("--batch-size", "3"), ("--gradient-accumulation-steps", "2"), ("--lr-schedule", "constant"),
                        ("--warmup-iters", "2"), ("--max-length", "64"), ("--dev-num", "3"),
                        ("--max-new-tokens", "5"), ("--eval-gen", None), ("--clip-grad", "0.5")):
        with pytest.raises(rundir.InputError, match=f"{flag}: stored "):
            claim(sft_argv(tiny_models, processed_tiny, save, "--resume", flag, *([value] if value else [])))
    # A setting the stored run does not record (an option added since) is compared with its default.
    stored = json.loads((save / "args.json").read_text())
    del stored["max_length"]
    (save / "args.json").write_text(json.dumps(stored))
    claim(sft_argv(tiny_models, processed_tiny, save, "--resume", "--max-length", "512")).release()
    with pytest.raises(rundir.InputError, match="--max-length: not recorded \\(the default then\\), now 128"):
        claim(sft_argv(tiny_models, processed_tiny, save, "--resume"))
    (save / "args.json").write_text('{"lr": 0.0')  # cut short
    with pytest.raises(rundir.InputError, match="args.json cannot be read .*restore it, or start over with "
                                                "--overwrite"):
        claim(sft_argv(tiny_models, processed_tiny, save, "--resume"))


def test_resume_and_overwrite_together_are_refused(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import train_sft

    err = refused(train_sft.main, sft_argv(tiny_models, processed_tiny, tmp_path / "run", "--resume", "--overwrite"),
                  capsys)
    assert err == "error: --overwrite: choose one: --resume continues the run in --save, --overwrite starts it over"
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------------------
# --overwrite, and directories that are not runs


def test_overwrite_deletes_only_what_a_run_wrote(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    save = make_run(tmp_path / "run", sft_argv(tiny_models, processed_tiny, tmp_path / "run"), SFT_CLASSES)
    (save / "best.json.tmp").write_text("{")  # what a kill mid-write leaves
    (save / "20").mkdir()  # a save killed right after its mkdir
    lock = claim(sft_argv(tiny_models, processed_tiny, save, "--overwrite"))
    assert sorted(p.name for p in save.iterdir()) == ["run.lock"]
    assert "note: --save" in capsys.readouterr().err
    lock.release()


@pytest.mark.parametrize("case", ["home", "beside a run", "numbered dir"])
def test_a_directory_holding_other_files_is_never_deleted(case: str, tiny_models: dict, processed_tiny: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--save ~ --overwrite`` cannot wipe a home directory: anything that is not a run's output is refused."""
    import train_sft

    save = tmp_path / "dir"
    if case == "home":
        save.mkdir()
        (save / ".bashrc").write_text("alias x=y\n")
        (save / "Documents").mkdir()
        (save / "Documents" / "thesis.tex").write_text("...")
        (save / "log.txt").write_text("mine, not a run's\n")
        expect = ".bashrc, Documents/, which are not a training run's output"
    elif case == "beside a run":
        make_run(save, sft_argv(tiny_models, processed_tiny, save), SFT_CLASSES)
        (save / "notes.md").write_text("results so far\n")
        expect = "notes.md, which is not a training run's output"
    else:
        make_run(save, sft_argv(tiny_models, processed_tiny, save), SFT_CLASSES)
        (save / "2023").mkdir()
        (save / "2023" / "photo.jpg").write_text("jpeg")
        expect = "2023/, which is not a training run's output"
    before = listing(save)
    err = refused(train_sft.main, sft_argv(tiny_models, processed_tiny, save, "--overwrite"), capsys)
    assert err == (f"error: --save {save} --overwrite: refused, the directory holds {expect}; --overwrite deletes "
                   f"only a run's own files: move those out or choose another --save")
    for flags in ((), ("--resume",)):
        err = refused(train_sft.main, sft_argv(tiny_models, processed_tiny, save, *flags), capsys)
        assert expect in err and ("choose a new or empty directory" in err or "move them out" in err), err
    assert listing(save) == {**before, "run.lock": ""}


def test_a_run_that_stops_at_once_leaves_no_directory(tiny_models: dict, processed_tiny: Path,
                                                      tmp_path: Path) -> None:
    lock = claim(sft_argv(tiny_models, processed_tiny, tmp_path / "new" / "run"))
    assert sorted(p.name for p in (tmp_path / "new" / "run").iterdir()) == ["run.lock"]
    lock.release(failed=True)  # e.g. a precision this device lacks, found after the claim
    assert not (tmp_path / "new").exists()
    lock = claim(sft_argv(tiny_models, processed_tiny, tmp_path / "run"))
    (tmp_path / "run" / "log.txt").write_text("started\n")
    lock.release(failed=True)  # something was written: the directory stays
    assert (tmp_path / "run" / "log.txt").is_file()


# ------------------------------------------------------------------------------------------------------------------
# the lock


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tiny_models: dict, processed_tiny: Path,
                                                                tmp_path: Path, holder,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import train_sft

    save = tmp_path / "run"
    save.mkdir()
    first = holder(save)
    for flags in ((), ("--resume",), ("--overwrite",)):
        err = refused(train_sft.main, sft_argv(tiny_models, processed_tiny, save, *flags), capsys)
        assert err == (f"error: --save {save} is in use by another run (PID {first.pid} on host "
                       f"{socket.gethostname()}; lock {save / 'run.lock'}): wait for it to end or stop it, or choose "
                       f"another --save")
    # Killed, it cannot release the lock; the kernel does, and the next run takes it over with a note.
    first.kill()
    first.wait()
    lock = claim(sft_argv(tiny_models, processed_tiny, save))
    err = capsys.readouterr().err
    assert err == (f"note: --save {save}: taking over the lock of PID {first.pid} on {socket.gethostname()} (no "
                   f"longer running; it ended without releasing it)\n")
    assert json.loads((save / "run.lock").read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
    lock.release()
    # Released cleanly, there is nothing to take over.
    claim(sft_argv(tiny_models, processed_tiny, save)).release()
    assert capsys.readouterr().err == ""


def test_only_global_rank_0_takes_the_lock(tiny_models: dict, processed_tiny: Path, tmp_path: Path, holder,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    save = tmp_path / "run"
    save.mkdir()
    holder(save)
    monkeypatch.setenv("RANK", "1")
    claim(sft_argv(tiny_models, processed_tiny, save)).release()  # not refused: rank 0 decides, and locks
    fresh = tmp_path / "fresh"
    claim(sft_argv(tiny_models, processed_tiny, fresh)).release()
    assert not fresh.exists()  # not even created


# ------------------------------------------------------------------------------------------------------------------
# the metrics log of a resumed run


def test_rewind_drops_the_rows_of_the_redone_steps(tmp_path: Path) -> None:
    from distill.logging_utils import RunLogger

    cfg = parse_configs([TrainConfig], ["--save", str(tmp_path), "--total-iters", "9", "--report-to", "none"])[0]
    rows = [{"step": s, "train/ce": float(s)} for s in range(1, 13)] + [{"step": 10, "valid/ce": 1.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 13, "tr')
    logger = RunLogger(tmp_path, cfg, enabled=True)
    logger.rewind(10)
    logger.log_metrics(11, {"train/ce": 0.5})
    logger.finish({})
    got = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert got == rows[:10] + [rows[-1], {"step": 11, "train/ce": 0.5}]


# ------------------------------------------------------------------------------------------------------------------
# no orphans: a process a launcher started ends with it


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def python_child(pid: int) -> int:
    """The child of ``pid`` running SLEEPER in Python (0 while there is none: bash's own forks, for a command
    substitution or before their exec, carry SLEEPER in their command line too)."""
    for c in children(pid):
        try:
            exe = os.path.realpath(f"/proc/{c}/exe")
            if exe == os.path.realpath(sys.executable) and b"die_with_launcher" in Path(f"/proc/{c}/cmdline"
                                                                                         ).read_bytes():
                return c
        except OSError:
            pass
    return 0


def alive(pid: int) -> bool:
    """Whether any thread of ``pid`` still runs: a process's main thread turns zombie before the others have exited
    (and closed its files)."""
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                return True
        except OSError:
            pass
    return False


def wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def gone_within(pids: list[int], seconds: float) -> float:
    """Seconds until every one of ``pids`` has ended (fails after ``seconds``)."""
    t0 = time.monotonic()
    wait_for(lambda: not any(alive(p) for p in pids), seconds, f"{pids} to end")
    return time.monotonic() - t0


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


SLEEPER = ("import sys, time; from distill import dist; time.sleep(float(sys.argv[1])); dist.die_with_launcher(); "
           "print('armed', flush=True); time.sleep(120)")


def launch_cmd(*python_args: str) -> list[str]:
    """bash running scripts/lib.sh's launch on ``python_args``, as every launcher script does."""
    return ["bash", "-c", 'source scripts/lib.sh && launch "$@"', "launch", *python_args]


@pytest.fixture()
def launcher_env(subprocess_env: dict[str, str]) -> dict[str, str]:
    return {**subprocess_env, "GPUS_PER_NODE": "1"}


def test_killing_the_launch_script_ends_the_training(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                     launcher_env: dict[str, str]) -> None:
    """bash scripts/gpt2/sft/sft_base.sh, SIGKILLed mid-run (only bash): its train_sft.py ends within seconds, and
    releases the directory."""
    save = tmp_path / "run"
    env = {**launcher_env, "CKPT": str(tiny_models["gpt2"]["student"]), "DATA_DIR": str(processed_tiny),
           "SAVE_PATH": str(save), "DS_CONFIG": str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp32.json")}
    proc = subprocess.Popen(["bash", "scripts/gpt2/sft/sft_base.sh", "--total-iters", "100000", "--batch-size", "2",
                             "--no-eval-gen", "--save-interval", "5", "--log-interval", "1", "--report-to", "none",
                             "--max-length", "128"], cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (save / "metrics.jsonl").is_file() and (save / "metrics.jsonl").stat().st_size > 0, 120,
                 "the first training step")
        (python,) = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        assert gone_within([python], 5.0) < 5.0
    finally:
        kill_group(proc)
    rundir.RunLock(save).acquire().release()  # free again; what the kill left resumes (tests/test_chaos.py)


@pytest.mark.parametrize("via", ["torchrun", "launch via torchrun"])
def test_killing_torchrun_or_its_launch_script_ends_the_workers(via: str, tmp_path: Path,
                                                                launcher_env: dict[str, str]) -> None:
    """Two workers under torchrun: SIGKILL torchrun (they get SIGTERM as its children), or the bash launcher above
    torchrun (torchrun outlives it; the workers watch the launcher)."""
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    free = str(port.getsockname()[1])
    port.close()
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER.replace("; ", "\n"))
    if via == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free,
               str(script), "0"]
    else:
        cmd = launch_cmd(str(script), "0")
    env = {**launcher_env, "GPUS_PER_NODE": "2", "MASTER_PORT": free}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, start_new_session=True)
    try:
        assert [proc.stdout.readline().strip() for _ in range(2)] == ["armed", "armed"]
        torchrun = proc.pid if via == "torchrun" else children(proc.pid)[0]
        workers = children(torchrun)
        assert len(workers) == 2
        os.kill(proc.pid, signal.SIGKILL)
        assert gone_within(workers, 5.0) < 5.0
        if via != "torchrun":
            gone_within([torchrun], 30.0)  # and torchrun, its workers failed, ends too
    finally:
        kill_group(proc)


@pytest.mark.parametrize("case", ["launched", "launcher dies first", "nohup python"])
def test_a_launched_process_ends_with_its_launcher_and_a_plain_one_does_not(case: str,
                                                                            launcher_env: dict[str, str]) -> None:
    """launched: the common case. launcher dies first: bash is killed before the process asked to be signalled
    (during its imports), which it then notices at once. nohup python: no launcher named, the process outlives the
    shell that started it."""
    delay = "1" if case == "launcher dies first" else "0"
    if case == "nohup python":
        cmd = ["bash", "-c", f'nohup "{sys.executable}" -c "$1" 0 & wait', "sh", SLEEPER]
    else:
        cmd = launch_cmd("-c", SLEEPER, delay)
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=launcher_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    python = 0
    try:
        if case != "launcher dies first":
            assert proc.stdout.readline().strip() == "armed"
        wait_for(lambda: python_child(proc.pid), 10, "the python process")
        python = python_child(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        if case == "nohup python":
            time.sleep(1.0)
            assert alive(python)
        else:
            assert gone_within([python], 8.0) < 8.0
            if case == "launcher dies first":
                out, err = proc.communicate(timeout=5)
                assert "armed" not in out
                assert f"error: the launcher (PID {proc.pid}) has ended, so this run stops" in err, err
    finally:
        kill_group(proc)
        if python and alive(python):
            os.kill(python, signal.SIGKILL)


# ------------------------------------------------------------------------------------------------------------------
# the SRD runner: its own directory is locked too, and what it starts ends with it


def test_srd_runner_locks_its_directory_and_refuses_overwrite(tiny_models: dict, processed_tiny: Path,
                                                              tmp_path: Path, holder,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from distill import srd_runner as srd_run
    from tests.test_srd import _run_argv

    def never(entry: str, argv: list[str]) -> int:
        raise AssertionError(f"unexpected launch of {entry}")

    save = tmp_path / "srd"
    with pytest.raises(rundir.InputError, match=f"--overwrite: the SRD runner continues a run in --save by "
                                                f"re-running the same command; to start over, delete {save}"):
        srd_run.run_srd(_run_argv(tiny_models, processed_tiny, save, "--overwrite"), launcher=never)
    save.mkdir()
    first = holder(save)
    with pytest.raises(rundir.InputError, match=f"--save {save} is in use by another run \\(PID {first.pid} on "):
        srd_run.run_srd(_run_argv(tiny_models, processed_tiny, save), launcher=never)
    # Its torchrun steps are told who launched them, so their workers end with the runner (die_with_launcher).
    calls: list[dict[str, str]] = []
    monkeypatch.setattr(srd_run, "subprocess", types.SimpleNamespace(
        run=lambda cmd, env: calls.append(env) or subprocess.CompletedProcess(cmd, 0)))
    assert srd_run.make_launcher(srd_run.split_argv([])[0])("train", []) == 0
    assert calls[0]["DISTILL_LAUNCHER_PID"] == str(os.getpid())
