"""Process-group helpers: one code path for 1..N processes, CUDA (nccl) or CPU (gloo)."""
from __future__ import annotations

import os
import random
import signal
import socket
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from distill import LAUNCHER_ENV  # the variable scripts/lib.sh and tools/srd_run.py set

T = TypeVar("T")


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------------------------
# A process started by a launcher ends with it (no orphan keeps training and writing checkpoints).
# ----------------------------------------------------------------------------------------------------------------
_PR_SET_PDEATHSIG = 1


def _parent_of(pid: int) -> Optional[int]:
    """The parent PID of a running process ``pid``; None when it is gone (a zombie, not yet reaped, is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state, ppid = f.read().rsplit(")", 1)[1].split()[:2]  # the command name may hold spaces and parentheses
    except (OSError, ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else int(ppid)


def _launcher_gone(pid: int) -> None:
    print(f"error: the launcher (PID {pid}) has ended, so this run stops (its newest complete checkpoint resumes "
          f"with --resume)", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def die_with_parent(expected_parent: int) -> bool:
    """SIGTERM to this process when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``; False elsewhere). SIGTERM
    keeps its default action, which ends the process even inside a long C call; a checkpoint being written is then
    simply incomplete (no trainer_state.json) and --resume takes the one before it. If the parent is already gone
    (it died before the call: the process now has another parent), the signal is sent at once."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != expected_parent:  # it died between this process's start and the prctl
        _launcher_gone(expected_parent)
    return True


def _watch(pid: int) -> None:
    """A daemon thread that SIGTERMs this process when ``pid`` (not its parent) ends: a pidfd where the kernel has
    them (no polling, no PID reuse), else a look every second."""
    import select
    import threading
    import time

    try:
        fd: Optional[int] = os.pidfd_open(pid)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        fd = None

    def wait() -> None:
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _parent_of(pid) is not None:
                time.sleep(1.0)
        _launcher_gone(pid)

    threading.Thread(target=wait, name="launcher-watch", daemon=True).start()


def die_with_launcher() -> None:
    """Ends this process when its launcher dies, if a launcher started it: torchrun (its workers carry
    TORCHELASTIC_RUN_ID; the parent is torchrun's agent) or scripts/lib.sh (``DISTILL_LAUNCHER_PID``, the launching
    shell; under torchrun that shell is torchrun's parent, and it is watched too, so killing the shell ends the
    workers although torchrun itself outlives it). A plain ``nohup python train_sft.py &`` names no launcher and
    survives its shell, as it should. Called first thing by :func:`init_distributed`; the parent it compares with is
    the one this process had when ``distill`` was imported, so a launcher that died during the imports is noticed."""
    if not sys.platform.startswith("linux"):
        return
    import distill

    parent = distill.PARENT_AT_START
    marker = os.environ.get(LAUNCHER_ENV, "")
    launcher = int(marker) if marker.isdigit() else None
    if launcher == os.getpid():  # the launcher exec'd this process: killing it kills the run
        return
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        die_with_parent(parent)
        if launcher is not None and _parent_of(parent) == launcher:
            _watch(launcher)
        elif launcher is not None and _parent_of(launcher) is None:
            _launcher_gone(launcher)
    elif launcher is not None:
        if launcher == parent:
            die_with_parent(parent)
        elif _parent_of(launcher) is None:  # gone already; a live one that is not the parent started an ancestor
            _launcher_gone(launcher)


def init_distributed(use_deepspeed: bool = True) -> DistEnv:
    """Joins (or creates) the process group. A plain ``python script.py`` becomes a world of one, so the same
    collective calls run everywhere; torchrun/deepspeed launchers provide RANK/WORLD_SIZE/LOCAL_RANK. A process a
    launcher started ends with it (:func:`die_with_launcher`)."""
    die_with_launcher()
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if use_deepspeed:
            import deepspeed

            if device.type == "cpu" and os.environ["WORLD_SIZE"] == "1":
                _skip_shm_comm_op()
            deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
        else:
            dist.init_process_group(backend=backend)
    return DistEnv(dist.get_rank(), dist.get_world_size(), local_rank, device)


def finish() -> None:
    """The end of a multi-rank run that succeeded: every rank waits for the others, then the group is taken down
    together. Exiting without it, a rank can tear its gloo connections down while another still holds them, and
    abort at exit ("terminate called without an active exception", seen after a finished 2-rank reflection), so its
    launcher reports a failure for work that was done. Only on the success path: a rank that stops with an error
    must not wait here for ranks that will never come (torchrun ends them). A world of one keeps its group (the
    in-process runs of the tests reuse it)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
        dist.destroy_process_group()


def _skip_shm_comm_op() -> None:
    """On CPU, DeepSpeed JIT-compiles a shared-memory all-reduce op the first time its comm backend starts (40-80 s
    of C++ compilation on a fresh machine, then cached). A world of one process never all-reduces, so it is marked
    not compatible and never built; multi-process CPU runs keep it."""
    try:
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    except (ImportError, AttributeError, TypeError):  # another DeepSpeed layout: building the op is only slower
        pass


def all_reduce_sum(values: Sequence[float] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sums a small vector over ranks (float64, so token counts stay exact)."""
    t = torch.as_tensor(values, dtype=torch.float64, device=device).clone()
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: T) -> list[T]:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shard_indices(n: int, rank: int, world_size: int, pad: bool = True) -> list[int]:
    """Strided shard of range(n). With ``pad`` every rank gets the same count (the first items repeat), so ranks
    run the same number of forward passes — required when ZeRO-3 gathers parameters collectively."""
    idx = list(range(rank, n, world_size))
    if pad and n > 0:
        per_rank = -(-n // world_size)
        while len(idx) < per_rank:
            idx.append(idx[len(idx) % max(len(idx), 1)] if idx else 0)
    return idx


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG this process draws from, as plain lists and tensors only, so a checkpoint's RNG file loads with
    ``torch.load(weights_only=True)`` (no pickled objects are ever read back)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
