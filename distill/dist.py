"""Process-group helpers: one code path for 1..N processes, CUDA (nccl) or CPU (gloo)."""
from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist

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


def init_distributed(use_deepspeed: bool = True) -> DistEnv:
    """Joins (or creates) the process group. A plain ``python script.py`` becomes a world of one, so the same
    collective calls run everywhere; torchrun/deepspeed launchers provide RANK/WORLD_SIZE/LOCAL_RANK."""
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
