"""Numerical safety of a training step, for every objective.

A step whose loss (any term, any micro-batch, any rank) or gradient norm is not finite changes nothing: its update is
skipped, counted and logged, and after ``--max-bad-steps`` consecutive ones the run stops (:class:`TrainingDiverged`,
exit status 3) with its last checkpoint intact. Skipped steps still count as steps: the data order and the learning
rate schedule advance, so a resumed run and an uninterrupted one stay step-for-step equal.

Where the check sits depends on who owns the update. DeepSpeed's ZeRO (stages 1-3), bf16 and fp16 optimizers
compute the global gradient norm themselves and already skip an update whose norm is not finite (their "overflow"
path, counted in ``engine.skipped_steps``). ZeRO-0 in fp32 hands the client optimizer to DeepSpeed unwrapped and
nothing looks at the norm before the update, so there the trainer computes the norm, clips with it and decides.
The loss check is the trainer's everywhere: a non-finite loss can come with finite gradients (a term that is
non-finite only in value), and is caught before the update in every configuration. Skipping is done by the client
optimizer itself (:func:`skippable`), the one object every DeepSpeed wrapper calls for the actual update — so a skip
leaves the parameters and the Adam moments and step count exactly as they were.
"""
from __future__ import annotations

import math
from typing import Any, Optional


class TrainingDiverged(RuntimeError):
    """Too many consecutive non-finite steps; the message says which and what to change."""


class _SkipMixin:
    """``skip_update = True`` makes ``step()`` a no-op (state, moments and step count untouched) until reset."""

    skip_update = False

    def step(self, *args: Any, **kwargs: Any) -> Any:
        if self.skip_update:
            return None
        return super().step(*args, **kwargs)  # type: ignore[misc]


_SKIPPABLE: dict[type, type] = {}


def skippable(optimizer_cls: type) -> type:
    """A subclass of ``optimizer_cls`` (``torch.optim.AdamW``, DeepSpeed's CPU Adam, ...) whose update can be
    skipped; ``isinstance`` checks by DeepSpeed against the original class still hold."""
    if optimizer_cls not in _SKIPPABLE:
        _SKIPPABLE[optimizer_cls] = type(f"Skippable{optimizer_cls.__name__}", (_SkipMixin, optimizer_cls), {})
    return _SKIPPABLE[optimizer_cls]


def finite(x: Optional[float]) -> bool:
    return x is None or math.isfinite(x)


class StepGuard:
    """Counts bad steps; ``record`` returns the log line of a bad step and raises after too many in a row."""

    def __init__(self, max_bad_steps: int):
        self.max_bad_steps = max_bad_steps
        self.consecutive = 0
        self.total = 0

    def record(self, step: int, bad: bool, loss: float, grad_norm: Optional[float],
               last_checkpoint: Optional[str] = None) -> Optional[str]:
        if not bad:
            self.consecutive = 0
            return None
        self.consecutive += 1
        self.total += 1
        what = []
        if not math.isfinite(loss):
            what.append(f"loss {loss}")
        if not finite(grad_norm):
            what.append(f"gradient norm {grad_norm}")
        cause = " and ".join(what) or "a non-finite loss term"
        if self.consecutive >= self.max_bad_steps:
            raise TrainingDiverged(
                f"step {step}: {cause} in {self.consecutive} consecutive steps (--max-bad-steps "
                f"{self.max_bad_steps}); the run stopped, "
                + (f"its last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was saved")
                + " — lower --lr, raise --warmup-iters or keep --clip-grad on, then start over (or --resume)")
        return (f"step {step}: {cause}; update skipped ({self.consecutive} in a row, {self.total} in all; the run "
                f"stops after {self.max_bad_steps} in a row)")

    def state(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load(self, state: Optional[dict[str, Any]]) -> None:
        state = state or {}
        self.consecutive, self.total = int(state.get("consecutive", 0)), int(state.get("total", 0))
