"""The run directory (``--save``): one run per directory, and only what a run wrote is ever deleted.

:func:`claim` runs on global rank 0 before any model loads (distill/entry.py) and either returns the directory's
lock, held until the run ends, or stops the run with one line (:class:`~distill.config.InputError`, exit status 2):

* **in use** — another process holds ``<save>/run.lock`` (``fcntl.flock``; its PID and host are written in the file):
  refused, naming them. A lock file whose holder is gone (the flock is free: the process was killed) is taken over
  with a one-line note.
* **not empty, no --resume** — refused, saying what is there: ``--resume`` continues the run, ``--overwrite`` starts
  over.
* **--overwrite** — deletes what is recognisably a run's output (:data:`RUN_FILES`, :data:`RUN_DIRS`, step
  directories ``<save>/<step>/``) and refuses a directory that holds anything else, so ``--save ~`` never wipes a
  home directory.
* **--resume** — the stored configuration (``args.json``, written by distill/logging_utils.RunLogger) is compared
  with the new one; a differing setting is refused, naming each with both values, unless it is in
  :data:`MAY_CHANGE_ON_RESUME`.

Other ranks neither lock nor look: rank 0 decides for the run, before the process group exists.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from distill.config import InputError, _flag
from distill.inputs import TRAINER_STATE, complete_checkpoints

LOCK_FILE = "run.lock"
ARGS_FILE = "args.json"
#: Files a training run writes into ``--save`` (distill/logging_utils.py, distill/trainer.py), with the temporary
#: names of their atomic writes, which a kill can leave behind.
RUN_FILES = frozenset({LOCK_FILE, ARGS_FILE, "args.json.tmp", "log.txt", "metrics.jsonl", "metrics.jsonl.tmp",
                       "best.json", "best.json.tmp", "best", "best.tmp", "run_summary.json",
                       "run_summary.json.tmp"})
#: Directories a training run writes besides its step directories: TensorBoard's events, Weights & Biases' files.
RUN_DIRS = frozenset({"runs", "wandb"})
#: What a step directory ``<save>/<step>/`` holds at least one of once its save has begun (distill/trainer.py:
#: weights or an adapter, the DeepSpeed state, the RNG state, the completion marker); an empty one is a save killed
#: at its start. A numbered directory holding none of these is not a checkpoint and is never deleted.
CHECKPOINT_MARKERS = (TRAINER_STATE, "config.json", "adapter_config.json", "model.safetensors",
                      "adapter_model.safetensors", "ds_state", "rng_state_0.pt")

#: Settings that may differ between a run and its ``--resume``: how long it trains (extending a run), how often it
#: logs, evaluates and saves, how many optimizer states are kept, where and how progress is reported, evaluation
#: batching, data-loading workers, activation recomputation (the same numbers, less memory), the non-finite-step
#: patience and --trust-remote-code (it decides only whether a model loads). Everything else — learning rate and schedule, seed, batch sizes and accumulation, the data, the models,
#: the divergence and its parameters, precision, lengths, generation settings (they decide which checkpoint is
#: best) — is part of what the run is and must not change. ``save``, ``resume`` and ``overwrite`` are not compared.
MAY_CHANGE_ON_RESUME = frozenset({
    "total_iters", "epochs", "log_interval", "eval_interval", "save_interval", "keep_optimizer_states",
    "report_to", "wandb_project", "run_name", "progress_interval", "eval_batch_size", "num_workers",
    "gradient_checkpointing", "max_bad_steps", "trust_remote_code"})
NOT_COMPARED = frozenset({"save", "resume", "overwrite"})
#: Settings holding a path: equal when they name the same file, however written.
PATH_SETTINGS = frozenset({"model_path", "peft_path", "data_dir", "lm_data_dir", "deepspeed_config",
                           "teacher_model_path", "teacher_peft_path"})


# ----------------------------------------------------------------------------------------------------------------
# The lock
# ----------------------------------------------------------------------------------------------------------------
def _host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (one owned by another user counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_holder(path: Path) -> Optional[dict[str, Any]]:
    """The ``{"pid", "host"}`` a lock file names, or None (empty: released cleanly; unreadable)."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8") or "null")
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and isinstance(rec.get("pid"), int) else None


class RunLock:
    """``<save>/run.lock``, held with ``fcntl.flock`` (released by the kernel when the process dies, however it
    dies) and naming its holder (PID, host) for the message of a run that is refused."""

    def __init__(self, save: Path, made: Sequence[Path] = ()):
        self.save = save
        self.path = save / LOCK_FILE
        self.made = list(made)  # the directories created for this run (``save`` and parents), innermost first
        self.fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        import fcntl

        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        except OSError as e:
            raise InputError(f"--save {self.save}: cannot create {self.path} ({e.strerror}); choose a directory "
                             f"you can write to") from None
        previous = read_holder(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(self._busy(read_holder(self.path))) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise
            # A filesystem without flock: the PID in the file decides, on this host at least.
            if previous is not None and previous["pid"] != os.getpid() and (
                    previous.get("host") != _host() or pid_alive(previous["pid"])):
                os.close(fd)
                raise InputError(self._busy(previous) + f" (this filesystem has no file locks: if that run is "
                                                        f"gone, delete {self.path})") from None
        self.fd = fd
        if previous is not None and previous["pid"] != os.getpid():
            where = previous.get("host") or "?"
            state = ("no longer running" if where == _host() and not pid_alive(previous["pid"])
                     else "not holding it")
            print(f"note: --save {self.save}: taking over the lock of PID {previous['pid']} on {where} ({state}; "
                  f"it ended without releasing it)", file=sys.stderr, flush=True)
        self._write(json.dumps({"pid": os.getpid(), "host": _host()}) + "\n")
        return self

    def _busy(self, holder: Optional[Mapping[str, Any]]) -> str:
        who = (f"PID {holder['pid']} on host {holder.get('host') or '?'}" if holder is not None
               else "a process that has not written its PID yet")
        return (f"--save {self.save} is in use by another run ({who}; lock {self.path}): wait for it to end or stop "
                f"it, or choose another --save")

    def _write(self, text: str) -> None:
        assert self.fd is not None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, text.encode(), 0)
        os.fsync(self.fd)

    def release(self, failed: bool = False) -> None:
        """Releases the lock; the emptied file stays (deleting a lock file races with a process opening it), so
        the next run finds no holder to take over. A run that ``failed`` before writing anything into the directory
        it made leaves no directory behind (nor the parents it made)."""
        if self.fd is None:
            return
        import fcntl

        try:
            self._write("")
            if failed and self.made and [p.name for p in self.save.iterdir()] == [LOCK_FILE]:
                self.path.unlink()
                for d in self.made:
                    d.rmdir()
        except OSError:
            pass
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class _NoLock:
    """What ranks other than 0 hold: nothing."""

    def release(self, failed: bool = False) -> None:
        pass


# ----------------------------------------------------------------------------------------------------------------
# What a directory holds
# ----------------------------------------------------------------------------------------------------------------
def is_step_dir(p: Path) -> bool:
    if not (p.name.isdigit() and p.is_dir() and not p.is_symlink()):
        return False
    names = {c.name for c in p.iterdir()}
    return not names or any(m in names for m in CHECKPOINT_MARKERS)


def is_run_output(p: Path) -> bool:
    """Whether ``p`` (an entry of a ``--save`` directory) is something a training run writes there."""
    if p.name in RUN_FILES:
        if p.name in ("best", "best.tmp"):
            return p.is_symlink()
        return p.is_file() and not p.is_symlink()
    if p.name in RUN_DIRS:
        return p.is_dir() and not p.is_symlink()
    return is_step_dir(p)


def _names(paths: Iterable[Path], limit: int = 6) -> str:
    shown = [p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in sorted(paths)]
    return ", ".join(shown[:limit]) + (f" and {len(shown) - limit} more" if len(shown) > limit else "")


def _describe(save: Path, entries: list[Path]) -> str:
    steps = sorted(int(p.name) for p in entries if is_step_dir(p))
    done = set(complete_checkpoints(save))
    complete = [s for s in steps if s in done]
    files = [p for p in entries if not is_step_dir(p)]
    if complete:
        head = f"checkpoints at step{'s' if len(complete) > 1 else ''} {_steps(complete)}"
    elif steps:
        head = "no complete checkpoint yet"
    else:
        head = "no checkpoint yet"
    return head + (f"; {_names(files)}" if files else "")


def _steps(steps: list[int]) -> str:
    return ", ".join(map(str, steps)) if len(steps) <= 4 else f"{steps[0]}, {steps[1]}, ... {steps[-1]}"


def delete_run_outputs(save: Path, entries: list[Path]) -> None:
    for p in entries:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


# ----------------------------------------------------------------------------------------------------------------
# Comparing configurations
# ----------------------------------------------------------------------------------------------------------------
def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(_show(v) for v in value) or "[]"
    if isinstance(value, str):
        return value or "''"
    return json.dumps(value)


def _same(key: str, stored: Any, new: Any) -> bool:
    if stored == new:
        return True
    if key in PATH_SETTINGS and isinstance(stored, str) and isinstance(new, str):
        return os.path.realpath(stored) == os.path.realpath(new)
    return False


def config_differences(stored: Mapping[str, Any], new: Mapping[str, Any],
                       defaults: Optional[Mapping[str, Any]] = None) -> list[str]:
    """``--flag: stored X, now Y`` for every setting that differs and may not change on resume.

    A setting the stored run does not record (an option added since it started) counts as its default; one only the
    stored run has (another entry point's, e.g. a KD run resumed with train_sft.py) differs."""
    new = json.loads(json.dumps(dict(new), default=str))  # tuples -> lists, paths -> str: as args.json holds them
    defaults = json.loads(json.dumps(dict(defaults or {}), default=str))
    out = []
    for key in list(stored) + [k for k in new if k not in stored]:
        if key in MAY_CHANGE_ON_RESUME or key in NOT_COMPARED:
            continue
        if key not in new:
            out.append(f"{_flag(key)}: stored {_show(stored[key])}, now not an option of this entry point")
        elif key not in stored:
            if key in defaults and _same(key, defaults[key], new[key]):
                continue
            out.append(f"{_flag(key)}: not recorded (the default then), now {_show(new[key])}")
        elif not _same(key, stored[key], new[key]):
            out.append(f"{_flag(key)}: stored {_show(stored[key])}, now {_show(new[key])}")
    return out


def field_defaults(classes: Iterable[type]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = f.default
            elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


# ----------------------------------------------------------------------------------------------------------------
# The decision
# ----------------------------------------------------------------------------------------------------------------
def is_main_process() -> bool:
    """Global rank 0, read before the process group exists (torchrun and DeepSpeed's launcher set RANK)."""
    return os.environ.get("RANK", "0") == "0"


def claim(train: Any, config: Mapping[str, Any], defaults: Optional[Mapping[str, Any]] = None) -> Any:
    """Checks and locks ``train.save`` for a run with ``config`` (what args.json will hold); returns the lock
    (``release()`` it when the run ends). InputError, one line, when the run must not start; nothing is changed
    then except a directory made here, which is removed again."""
    if not is_main_process():
        return _NoLock()
    save = Path(train.save)
    if save.exists() and not save.is_dir():
        raise InputError(f"--save {save} is a file, not a directory; choose a directory for the run's outputs")
    made = [d for d in (save, *save.parents) if not d.exists()]
    try:
        save.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--save {save}: cannot create it ({e.strerror}); choose a directory you can write "
                         f"to") from None
    lock = RunLock(save, made).acquire()
    try:
        check_contents(save, train, config, defaults)
    except BaseException:
        lock.release(failed=True)
        raise
    return lock


def check_contents(save: Path, train: Any, config: Mapping[str, Any],
                   defaults: Optional[Mapping[str, Any]] = None) -> None:
    """The decision on a locked directory (see the module docstring); deletes the old run for --overwrite."""
    entries = [p for p in save.iterdir() if p.name != LOCK_FILE]
    if not entries:
        return
    foreign = [p for p in entries if not is_run_output(p)]
    run = [p for p in entries if is_run_output(p)]
    if foreign:
        what = f"holds {_names(foreign)}, which {'is' if len(foreign) == 1 else 'are'} not a training run's output"
        if train.overwrite:
            raise InputError(f"--save {save} --overwrite: refused, the directory {what}; --overwrite deletes only a "
                             f"run's own files: move those out or choose another --save")
        if not run:
            raise InputError(f"--save {save} is not empty: it {what}; choose a new or empty directory")
        raise InputError(f"--save {save} {what}, beside a run ({_describe(save, run)}); move them out, or choose "
                         f"another --save")
    if train.overwrite:
        print(f"note: --save {save} --overwrite: deleting the previous run ({_describe(save, run)})",
              file=sys.stderr, flush=True)
        delete_run_outputs(save, run)
        return
    if not train.resume:
        raise InputError(f"--save {save} already holds a run ({_describe(save, run)}): pass --resume to continue "
                         f"it or --overwrite to start over")
    args = save / ARGS_FILE
    if not args.is_file():
        print(f"note: --save {save} --resume: no {ARGS_FILE}, so the settings cannot be compared with the stored "
              f"run's", file=sys.stderr, flush=True)
        return
    try:
        stored = json.loads(args.read_text(encoding="utf-8"))
        if not isinstance(stored, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise InputError(f"--save {save} --resume: {args} cannot be read ({e}); restore it, or start over with "
                         f"--overwrite") from None
    diffs = config_differences(stored, config, defaults)
    if diffs:
        raise InputError(f"--save {save} --resume: the stored run ({args}) has other settings — "
                         f"{'; '.join(diffs)}; resume with the stored values, or start a new run (another --save, "
                         f"or --overwrite). Only {', '.join(_flag(k) for k in sorted(MAY_CHANGE_ON_RESUME))} may "
                         f"change on resume")
