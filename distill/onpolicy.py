"""On-policy distillation: steps that also train on the student's own outputs (GKD, DistiLLM, ImitKD).

Off-policy KD trains on ground-truth (or teacher) text only, while at inference the student conditions on its own
text. Here a micro-batch may instead be *the student's answers to its prompts*: in the objective's ``prepare`` the
current student samples responses (``ctx.generate``: KV cache, no gradient, eval mode, under ZeRO-3 its parameters
gathered once for the whole generation), they become a right-padded training batch whose loss positions are the
generated tokens (EOS included when generated; prompt and padding masked), and the trainer runs the teacher on it as
on any batch. The divergence is any kind of the toolkit (``--type <schedule>-<kind>``).

Per micro-batch one draw ``r ~ U(0, 1)`` (from ``ctx.shared_rng``, seeded alike on every rank, so all ranks take the
same branch and generate together) picks the batch's source, as the DistiLLM repository's ``finetune.py``:

* ``mixed`` (GKD; ImitKD with ``--mixed-alpha 1``): ``r < mixed_alpha`` -> fresh student outputs go into the replay
  buffer and the micro-batch is drawn from the buffer; else the data.
* ``adaptive`` (DistiLLM's adaptive SGO): with the threshold ``thr`` and ``samp = thr * (1 - step / total)``
  (``--replay-ratio decreasing``; ``increasing``: ``thr * step / total``; ``constant``: ``thr / 2``):
  ``r < samp`` or (``r < thr`` and the buffer not yet full) -> fresh outputs, stored and trained on; else
  ``r < thr`` -> a batch replayed from the buffer; else the data. ``thr`` starts at ``--init-threshold`` and rises
  by 0.1 (at most 1) at an evaluation whose validation CE is at least ``--loss-eps`` above the reference, which
  then becomes that CE (the reference starts as the validation CE before training).

The buffer, the threshold, its reference and the counters are the objective's state, saved in every checkpoint with
the trainer's generators; a resumed run makes the same draws. Differences from the released code are listed in
docs/onpolicy.md.
"""
from __future__ import annotations

import dataclasses
import time
from collections import deque
from typing import Any, Mapping, Optional, Sequence

import torch

from distill.objectives import KDObjective, StepContext

Pair = tuple[list[int], list[int]]  # (prompt ids, response ids): a training row before padding

SOURCES = ("fresh", "replay", "data")


class ReplayBuffer:
    """Student outputs kept for replay, as (prompt, response) token lists.

    At most ``capacity`` entries; adding to a full buffer evicts the oldest first (first in, first out, as a deque
    with ``maxlen``). ``sample(k, rng)`` draws ``k`` distinct entries uniformly at random (without replacement, as
    ``random.sample``) with the given generator; only entries that were added can come out."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.entries: deque[Pair] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def full(self) -> bool:
        return len(self.entries) >= self.capacity

    def add(self, pairs: Sequence[Pair]) -> None:
        for prompt, response in pairs:
            self.entries.append((list(prompt), list(response)))

    def sample(self, k: int, rng: torch.Generator) -> list[Pair]:
        if not 0 < k <= len(self.entries):
            raise ValueError(f"cannot draw {k} distinct entries from a buffer of {len(self.entries)}")
        picks = torch.randperm(len(self.entries), generator=rng)[:k].tolist()
        return [self.entries[i] for i in picks]

    def state_dict(self) -> dict[str, Any]:
        """Tensors only (checkpoints load with ``weights_only``): the tokens of all entries back to back, and each
        entry's prompt and response lengths, oldest first."""
        lengths = torch.tensor([[len(p), len(r)] for p, r in self.entries], dtype=torch.long).reshape(-1, 2)
        tokens = torch.tensor([t for p, r in self.entries for t in (*p, *r)], dtype=torch.long)
        return {"capacity": self.capacity, "tokens": tokens, "lengths": lengths}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.entries.clear()
        tokens, at = state["tokens"].tolist(), 0
        for n_prompt, n_response in state["lengths"].tolist():
            self.entries.append((tokens[at:at + n_prompt], tokens[at + n_prompt:at + n_prompt + n_response]))
            at += n_prompt + n_response


def student_answers(micro_batch: Mapping[str, torch.Tensor], ctx: StepContext, gen: Any, tokenizer: Any,
                    which: str = "student") -> list[Pair]:
    """``(prompt, answer)`` per row: ``which`` model's answer to each row's prompt, sampled with ``gen`` from the
    checkpointed ``ctx.rng``; the answer keeps its EOS when one was generated (an answer cut by the length limit has
    none, so no position is taught to stop there). Never longer than fits a training row with its prompt."""
    from data_utils.datasets import left_padded, prompts_of

    prompts = prompts_of(micro_batch)  # type: ignore[arg-type]
    if ctx.max_length is not None:
        room = ctx.max_length - max(len(p) for p in prompts)
        if room < 1:
            raise ValueError(f"a prompt of {max(len(p) for p in prompts)} tokens leaves no room to generate in "
                             f"--max-length {ctx.max_length}")
        gen = dataclasses.replace(gen, max_new_tokens=min(gen.max_new_tokens, room))
    batch = left_padded(prompts, tokenizer.pad_token_id)
    answers = ctx.generate(batch["input_ids"].to(ctx.device), batch["attention_mask"].to(ctx.device), gen,
                           which=which, keep_eos=True)
    return [(p, a) for p, a in zip(prompts, answers)]


def sampling_threshold(threshold: float, progress: float, replay_ratio: str) -> float:
    """The probability of fresh generation within the adaptive threshold at ``progress`` (in [0, 1]) of the run."""
    if replay_ratio == "constant":
        return threshold * 0.5
    if replay_ratio == "increasing":
        return threshold * progress
    return threshold * (1.0 - progress)


def raised_threshold(threshold: float, reference: float, loss: float, eps: float,
                     step: float = 0.1) -> tuple[float, float]:
    """(threshold, reference) after an evaluation with validation CE ``loss``: a loss at least ``eps`` above the
    reference raises the threshold by ``step`` (at most 1) and becomes the new reference; otherwise both stay."""
    if loss >= reference + eps:
        return min(threshold + step, 1.0), loss
    return threshold, reference


class OnPolicyKD(KDObjective):
    """KD whose micro-batches may be the student's own outputs (module docstring): ``(1 - kd_ratio) * CE +
    kd_ratio * divergence`` on whatever text the micro-batch ends up holding, the teacher's distributions on it as
    targets."""

    def __init__(self, cfg: Any, vocab_size: int, tokenizer: Any, gen: Any):
        super().__init__(cfg, vocab_size)
        self.tokenizer, self.gen, self.schedule = tokenizer, gen, cfg.schedule
        self.buffer = ReplayBuffer(cfg.capacity)
        self.threshold = float(cfg.init_threshold)
        self.reference: Optional[float] = None  # validation CE the threshold compares with
        self.sources = {s: 0 for s in SOURCES}  # micro-batches per source, over the run
        self.evaluate_at_start = self.schedule == "adaptive"
        self._step_metrics: dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- the schedule ---
    def choose(self, ctx: StepContext) -> str:
        """The source of one micro-batch: "fresh", "replay" or "data"."""
        # One draw per micro-batch, the same on every rank (same seed, same number of draws): the ranks agree on
        # whether to generate, which ZeRO-3's gathered generation needs.
        r = float(torch.rand((), generator=ctx.shared_rng))
        if self.schedule == "mixed":
            return "fresh" if r < self.cfg.mixed_alpha else "data"
        # The released loop counts steps from 1: its first step already has step / total = 1 / total.
        progress = min((ctx.step + 1) / max(ctx.total_steps, 1), 1.0)
        samp = sampling_threshold(self.threshold, progress, self.cfg.replay_ratio)
        if r < samp or (r < self.threshold and not self.buffer.full):
            return "fresh"
        return "replay" if r < self.threshold else "data"

    def prepare(self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext) -> list[dict[str, torch.Tensor]]:
        from data_utils.datasets import response_batch

        out = []
        gen_tokens, gen_seconds = 0, 0.0
        used = {s: 0 for s in SOURCES}
        pad = self.tokenizer.pad_token_id
        for mb in micro_batches:
            source = self.choose(ctx)
            used[source] += 1
            if source == "data":
                out.append(mb)
                continue
            rows = int(mb["input_ids"].shape[0])
            if source == "fresh":
                t0 = time.perf_counter()
                fresh = student_answers(mb, ctx, self.gen, self.tokenizer)
                gen_seconds += time.perf_counter() - t0
                gen_tokens += sum(len(a) for _, a in fresh)
                self.buffer.add(fresh)
                # GKD as the DistiLLM repository runs it trains on a draw from the buffer (the fresh outputs are in
                # it); DistiLLM's adaptive schedule trains on the fresh outputs themselves.
                pairs = self.buffer.sample(rows, ctx.rng) if self.schedule == "mixed" else fresh
            else:
                pairs = self.buffer.sample(rows, ctx.rng)
            out.append(response_batch(pairs, pad, ctx.max_length))
        for s, n in used.items():
            self.sources[s] += n
        n = max(len(micro_batches), 1)
        self._step_metrics = {"gen_tokens": float(gen_tokens), "gen_seconds": gen_seconds,
                              **{f"{s}_share": used[s] / n for s in SOURCES}, "buffer": float(len(self.buffer))}
        if self.schedule == "adaptive":
            self._step_metrics["threshold"] = self.threshold
        return out

    def step_metrics(self) -> dict[str, float]:
        return dict(self._step_metrics)

    def on_evaluate(self, metrics: Mapping[str, float], ctx: StepContext) -> None:
        """DistiLLM's threshold update from the validation CE (the evaluation before training sets the reference)."""
        if self.schedule != "adaptive" or "valid/ce" not in metrics:
            return
        loss = float(metrics["valid/ce"])
        if self.reference is None:
            self.reference = loss
            return
        self.threshold, self.reference = raised_threshold(self.threshold, self.reference, loss, self.cfg.loss_eps)

    # ------------------------------------------------------------------------------------------------- state ---
    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict(), "threshold": self.threshold,
                "reference": self.reference if self.reference is not None else float("nan"),
                "sources": dict(self.sources)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self.buffer.load_state_dict(state["buffer"])
        self.threshold = float(state["threshold"])
        ref = float(state["reference"])
        self.reference = None if ref != ref else ref
        self.sources = {s: int(state["sources"].get(s, 0)) for s in SOURCES}
        self.evaluate_at_start = False  # the reference comes with the state
