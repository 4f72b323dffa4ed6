"""MiniLLM: the reverse KL of sequence distributions, minimised by policy gradient (Gu et al., ICLR 2024), as the
LMOps ``minillm/`` code runs it — in this toolkit's one trainer.

The run alternates two phases, both inside the objective's ``prepare`` (distill/objectives.py):

1. **Rollouts.** When the store is used up (``--ppo-epochs`` passes over it), the objective draws prompts from the
   training stream (``ctx.draw_batch``) until it has ``--num-rollouts`` / world size of them, and the student samples
   a response to each (``--chunk-size`` prompts at a time) — from its own distribution or from the teacher-mixed
   ``(1 - a) q + a p_T`` (``--teacher-mixed-alpha``), by this toolkit's own sampling loop with KV caches for both
   models (distill/sampling.py). Each token keeps the old policy's log-probability, the teacher's, and the
   importance weight ``w = q / ((1 - a) q + a p_T)``; its reward is ``(log p_T - log q_old) / --reward-scaling``,
   clipped to ``+-cliprange_reward``.
2. **PPO steps.** Each micro-batch is the next ``--batch-size`` rollouts of the store in a shuffled order (seeded by
   ``--seed-ppo`` and the rank). Advantages are the rewards-to-go with discount ``--gamma`` (including ``r_t``),
   divided by the number of remaining tokens with ``--length-norm``, then whitened with statistics over the step's
   response tokens on all ranks. The loss: the PPO-clipped policy gradient on ``rho * w`` (``rho = pi / pi_old``,
   ``--cliprange``), plus with ``--single-step-reg`` the exact per-position reverse KL ``sum_v q(v) (log q(v) - log
   p_T(v))`` on the rollout positions, plus the pretraining term on ``--lm-data-dir`` (``--lm-coef``; MiniLLM's
   ``--kd-ratio`` makes it ``(1 - r) CE + r teacher soft-CE``), each averaged over its tokens of the whole step.

The store, its order and position, the pending prompts and the sampling generator are the objective's state, saved in
every checkpoint; a killed run resumes to the same weights. Differences from the LMOps code: docs/minillm.md.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from distill.objectives import Needs, Objective, Outputs, StepContext, ce_sum, response_mask

# ------------------------------------------------------------------------------------------------------------------
# The tensor functions: [B, N] per response token (N = response length), ``mask`` 1 on response tokens.
# ------------------------------------------------------------------------------------------------------------------


def token_rewards(teacher_logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor,
                  scaling: Optional[float] = 0.5, clip: Optional[float] = 100.0) -> torch.Tensor:
    """``r_t = (log p_T(y_t) - log q_old(y_t)) / scaling``, clipped to ``[-clip, clip]``, 0 off the mask."""
    r = (teacher_logprobs.float() - old_logprobs.float()) * mask
    if scaling:
        r = r / scaling
    if clip:
        r = r.clamp(-clip, clip)
    return r * mask


def rewards_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """``G_t = r_t + gamma G_{t+1}`` over each row's response tokens (positions off the mask contribute nothing)."""
    rewards = rewards.float() * mask
    out = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out * mask


def remaining_tokens(mask: torch.Tensor) -> torch.Tensor:
    """Per position, the number of response tokens from it to the row's end (itself included); 1 off the mask."""
    mask = mask.float()
    cum = mask.cumsum(dim=-1)
    left = mask - cum + cum[:, -1:]
    return torch.where(left > 0, left, torch.ones_like(left))


def advantages(rewards: torch.Tensor, mask: torch.Tensor, gamma: float, length_norm: bool) -> torch.Tensor:
    """Rewards-to-go, divided by the number of remaining tokens with ``length_norm`` (before whitening)."""
    a = rewards_to_go(rewards, mask, gamma)
    if length_norm:
        a = a / remaining_tokens(mask)
    return a * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, mean: float, var: float) -> torch.Tensor:
    """``(x - mean) / sqrt(var + 1e-8)`` on the mask (statistics gathered by the caller over all ranks)."""
    return (x - mean) * torch.rsqrt(torch.tensor(var + 1e-8, dtype=torch.float32)) * mask


def ppo_loss_sum(logprobs: torch.Tensor, old_logprobs: torch.Tensor, adv: torch.Tensor, weights: torch.Tensor,
                 mask: torch.Tensor, cliprange: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed PPO-clipped policy-gradient loss, number of tokens whose clipped branch was taken).

    ``ratio = exp(logprobs - old_logprobs) * weights``; per token ``max(-A ratio, -A clip(ratio, 1 - c, 1 + c))``,
    summed over the mask (the caller divides by the step's response tokens)."""
    mask = mask.float()
    ratio = torch.exp((logprobs.float() - old_logprobs.float()) * mask) * weights.float()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = (torch.maximum(unclipped, clipped) * mask).sum()
    n_clipped = ((clipped > unclipped).float() * mask).sum()
    return loss, n_clipped.detach()


def reverse_kl_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """Summed exact per-position reverse KL ``sum_v q(v) (log q(v) - log p_T(v))`` over the mask, both models'
    logits divided by the sampling temperature (MiniLLM's single-step regularisation); the chunked core of
    distill/losses.py, gradient into the student only."""
    from distill.losses import distillation_loss

    if temperature != 1.0:
        student_logits, teacher_logits = student_logits / temperature, teacher_logits / temperature
    return distillation_loss("rkl", student_logits, teacher_logits, mask.bool(), reduction="sum")


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """[B, T] log-probability of each label under ``logits / temperature`` (0 where the label is ignored)."""
    keep = labels != -100
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked * keep


# ------------------------------------------------------------------------------------------------------------------
# The rollout store
# ------------------------------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    prompt: list[int]
    response: list[int]  # the sampled tokens, EOS included when the answer ended
    old_logprobs: list[float]  # log q_old of each response token (at the sampling temperature)
    teacher_logprobs: list[float]  # log p_T of each response token (the raw teacher, as the reward reads it)
    rewards: list[float]  # the clipped, scaled per-token rewards
    weights: list[float]  # importance weights q / ((1 - a) q + a p_T); 1 without teacher mixing


@dataclass
class RolloutStore:
    """The rollouts of the current refill, walked ``ppo_epochs`` times in a shuffled order per pass."""

    rollouts: list[Rollout] = field(default_factory=list)
    order: list[int] = field(default_factory=list)
    cursor: int = 0  # next index into ``order``
    passes: int = 0  # completed passes over the store

    def take(self, n: int, generator: torch.Generator) -> list[Rollout]:
        """The next ``n`` rollouts of this pass (a pass ends when fewer than ``n`` are left: drop_last)."""
        if not self.order or self.cursor + n > len(self.order):
            self.passes += bool(self.order)
            self.order = torch.randperm(len(self.rollouts), generator=generator).tolist()
            self.cursor = 0
        picked = [self.rollouts[i] for i in self.order[self.cursor:self.cursor + n]]
        self.cursor += n
        return picked

    def used_up(self, ppo_epochs: int, n: int) -> bool:
        if not self.rollouts:
            return True
        pass_done = self.cursor + n > len(self.order)
        return self.passes + int(pass_done and bool(self.order)) >= ppo_epochs

    def state_dict(self) -> dict[str, Any]:
        r = self.rollouts
        return {"prompt_len": torch.tensor([len(x.prompt) for x in r], dtype=torch.long),
                "response_len": torch.tensor([len(x.response) for x in r], dtype=torch.long),
                "tokens": torch.tensor([t for x in r for t in (*x.prompt, *x.response)], dtype=torch.long),
                "old_logprobs": torch.tensor([v for x in r for v in x.old_logprobs], dtype=torch.float64),
                "teacher_logprobs": torch.tensor([v for x in r for v in x.teacher_logprobs], dtype=torch.float64),
                "rewards": torch.tensor([v for x in r for v in x.rewards], dtype=torch.float64),
                "weights": torch.tensor([v for x in r for v in x.weights], dtype=torch.float64),
                "order": torch.tensor(self.order, dtype=torch.long), "cursor": self.cursor, "passes": self.passes}

    def load_state_dict(self, s: Mapping[str, Any]) -> None:
        tokens, lp, tp, rw, w = (s[k].tolist() for k in ("tokens", "old_logprobs", "teacher_logprobs", "rewards",
                                                         "weights"))
        self.rollouts, at, ra = [], 0, 0
        for n_p, n_r in zip(s["prompt_len"].tolist(), s["response_len"].tolist()):
            self.rollouts.append(Rollout(tokens[at:at + n_p], tokens[at + n_p:at + n_p + n_r], lp[ra:ra + n_r],
                                         tp[ra:ra + n_r], rw[ra:ra + n_r], w[ra:ra + n_r]))
            at, ra = at + n_p + n_r, ra + n_r
        self.order, self.cursor, self.passes = s["order"].tolist(), int(s["cursor"]), int(s["passes"])


# ------------------------------------------------------------------------------------------------------------------
# The objective
# ------------------------------------------------------------------------------------------------------------------
def _aligned(values: Sequence[Sequence[float]], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[B, T] tensor with each row's per-response-token ``values`` at the row's label positions (in order)."""
    labels = batch["labels"]
    out = torch.zeros(labels.shape, dtype=torch.float32)
    for b, row in enumerate(values):
        pos = (labels[b] != -100).nonzero().flatten()
        n = min(len(pos), len(row))
        out[b, pos[:n]] = torch.tensor(list(row[:n]), dtype=torch.float32)
    return out


class MiniLLMObjective(Objective):
    """See the module docstring. Terms: ``pg`` (the PPO loss), ``reg`` (the exact reverse KL to the teacher per
    position; in the loss with ``--single-step-reg``), ``ce`` (the student's cross-entropy on the batch's tokens: on
    validation the reference answers, in training its own samples, logged only); each averaged over the step's
    response tokens. On validation (the data's reference answers) ``pg`` is 0."""

    terms = ("pg", "reg", "ce")
    student_needs = Needs()
    teacher_needs = Needs()
    draws_own_batches = True
    stop_at_first_limit = True

    def __init__(self, cfg: Any, tokenizer: Any, gen: Any, vocab_size: int, rank: int, world_size: int):
        self.cfg, self.tokenizer, self.gen, self.vocab_size = cfg, tokenizer, gen, vocab_size
        self.rollouts_per_rank = cfg.num_rollouts // world_size
        self.pretraining_kd_ratio = cfg.kd_ratio
        self.store = RolloutStore()
        self.pending: list[list[int]] = []  # prompts drawn but not yet rolled out (the stream is never skipped)
        self.order_rng = torch.Generator().manual_seed(cfg.seed_ppo + rank)  # the store's shuffles, per rank
        self.refills = 0
        self._metrics: dict[str, float] = {}

    def steps_per_epoch(self, batches_per_epoch: int, gradient_accumulation_steps: int, batch_size: int) -> int:
        # One pass over the prompts: each store of R rollouts gives ppo_epochs * (R // batch) micro-batches.
        prompts = batches_per_epoch * batch_size
        micro = prompts / self.rollouts_per_rank * (self.rollouts_per_rank // batch_size) * self.cfg.ppo_epochs
        return max(int(micro // gradient_accumulation_steps), 1)

    # ---------------------------------------------------------------------------------------------- rollouts ---
    def refill(self, ctx: StepContext) -> None:
        from data_utils.datasets import left_padded, prompts_of
        from distill.sampling import sample_rollouts

        while len(self.pending) < self.rollouts_per_rank:
            self.pending += prompts_of(ctx.draw_batch())
        prompts, self.pending = self.pending[:self.rollouts_per_rank], self.pending[self.rollouts_per_rank:]
        cfg, pad, eos = self.cfg, self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        rollouts: list[Rollout] = []
        t0 = time.perf_counter()
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=ctx.rng))
        generator = torch.Generator(device=ctx.device).manual_seed(seed)
        with ctx.policy("student") as student, ctx.policy("teacher") as teacher:
            chunk_size = cfg.chunk_size or ctx.batch_size
            for start in range(0, len(prompts), chunk_size):
                chunk = prompts[start:start + chunk_size]
                room = (ctx.max_length or 10**9) - max(len(p) for p in chunk)
                batch = left_padded(chunk, pad)
                out = sample_rollouts(student, teacher, batch["input_ids"].to(ctx.device),
                                      batch["attention_mask"].to(ctx.device),
                                      max_new_tokens=max(1, min(self.gen.max_new_tokens, room)),
                                      eos_token_id=eos, pad_token_id=pad, vocab_size=self.vocab_size,
                                      mix_alpha=cfg.teacher_mixed_alpha or 0.0, temperature=self.gen.temperature,
                                      return_teacher_logprobs=True, generator=generator)
                self._metrics["teacher_seconds"] = self._metrics.get("teacher_seconds", 0.0) + out.teacher_seconds
                mask = out.mask.float()
                rewards = token_rewards(out.teacher_logprobs, out.student_logprobs, mask, cfg.reward_scaling,
                                        cfg.cliprange_reward)
                for b, prompt in enumerate(chunk):
                    n = int(out.lengths[b])
                    rollouts.append(Rollout(list(prompt), out.tokens[b, :n].tolist(),
                                            out.student_logprobs[b, :n].tolist(),
                                            out.teacher_logprobs[b, :n].tolist(), rewards[b, :n].tolist(),
                                            out.weights[b, :n].tolist()))
        self.store = RolloutStore(rollouts)
        self.refills += 1
        self._metrics["rollout_seconds"] = self._metrics.get("rollout_seconds", 0.0) + time.perf_counter() - t0

    def prepare(self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext) -> list[dict[str, torch.Tensor]]:
        from data_utils.datasets import response_batch

        from distill import dist

        self._metrics = {}
        pad = self.tokenizer.pad_token_id
        out, raw = [], []
        for _ in micro_batches:
            if self.store.used_up(self.cfg.ppo_epochs, ctx.batch_size):
                self.refill(ctx)
            picked = self.store.take(ctx.batch_size, self.order_rng)
            batch = response_batch([(r.prompt, r.response) for r in picked], pad, ctx.max_length)
            mask = response_mask(batch).float()
            rewards = _aligned([r.rewards for r in picked], batch)
            batch["old_logprobs"] = _aligned([r.old_logprobs for r in picked], batch)
            batch["weights"] = _aligned([r.weights for r in picked], batch) + (1 - mask)  # 1 off the mask
            raw.append(advantages(rewards, mask, self.cfg.gamma, self.cfg.length_norm))
            batch["rewards"] = rewards
            out.append(batch)
        # Whitening over the step's response tokens on every rank (LMOps: its PPO batch on every rank).
        masks = [response_mask(b).float() for b in out]
        s = sum(float((a * m).sum()) for a, m in zip(raw, masks))
        n = sum(float(m.sum()) for m in masks)
        s, n = dist.all_reduce_sum([s, n], ctx.device).tolist()
        mean = s / max(n, 1.0)
        sq = sum(float((((a - mean) * m) ** 2).sum()) for a, m in zip(raw, masks))
        (sq,) = dist.all_reduce_sum([sq], ctx.device).tolist()
        var = sq / max(n, 1.0)
        for b, a, m in zip(out, raw, masks):
            b["advantages"] = whiten(a, m, mean, var)
        for mb, b in zip(micro_batches, out):  # the pretraining batch, when the run has one, goes along
            b.update({k: v for k, v in mb.items() if k not in b})
        self._step_stats(out, masks)
        return out

    def _step_stats(self, batches: list[dict[str, torch.Tensor]], masks: list[torch.Tensor]) -> None:
        tokens = sum(float(m.sum()) for m in masks)
        rows = sum(int(m.shape[0]) for m in masks)
        reward = torch.cat([b["rewards"][m.bool()] for b, m in zip(batches, masks)])
        w = torch.cat([b["weights"][m.bool()] for b, m in zip(batches, masks)])
        self._metrics.update({"reward": float(reward.mean()) if len(reward) else 0.0,
                              "reward_std": float(reward.std()) if len(reward) > 1 else 0.0,
                              "response_len": tokens / max(rows, 1),
                              "weight_min": float(w.min()) if len(w) else 1.0,
                              "weight_max": float(w.max()) if len(w) else 1.0,
                              "refills": float(self.refills)})

    # -------------------------------------------------------------------------------------------------- loss ---
    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        n = float(response_mask(batch).sum())
        return {"pg": n, "reg": n, "ce": n}

    def sums(self, student: Outputs, teacher: Optional[Outputs], batch: Mapping[str, torch.Tensor],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        assert student.logits is not None and teacher is not None and teacher.logits is not None
        v, temp = self.vocab_size, self.gen.temperature
        logits, t_logits = student.logits[..., :v], teacher.logits[..., :v]
        mask = response_mask(batch)
        reg = reverse_kl_sum(logits, t_logits, mask, temp)
        ce = ce_sum(logits, batch["labels"])
        if "advantages" not in batch:  # validation: the data's reference answers, no rollouts
            return {"pg": torch.zeros((), device=logits.device), "reg": reg, "ce": ce}
        logprobs = token_logprobs(logits, batch["labels"], temp)
        pg, clipped = ppo_loss_sum(logprobs, batch["old_logprobs"], batch["advantages"], batch["weights"], mask,
                                   self.cfg.cliprange)
        self._metrics["clipped_tokens"] = self._metrics.get("clipped_tokens", 0.0) + float(clipped)
        self._metrics["tokens"] = self._metrics.get("tokens", 0.0) + float(mask.sum())
        return {"pg": pg, "reg": reg, "ce": ce}

    def combine(self, means: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        return means["pg"] + (means["reg"] if self.cfg.single_step_reg else 0.0 * means["reg"])

    def step_metrics(self) -> dict[str, float]:
        m = dict(self._metrics)
        if "tokens" in m:
            m["clip_fraction"] = m.pop("clipped_tokens", 0.0) / max(m.pop("tokens"), 1.0)
        m.setdefault("rollout_seconds", 0.0)
        m.setdefault("teacher_seconds", 0.0)
        return m

    # ------------------------------------------------------------------------------------------------- state ---
    def state_dict(self) -> dict[str, Any]:
        return {"store": self.store.state_dict(), "order_rng": self.order_rng.get_state(), "refills": self.refills,
                "pending_len": torch.tensor([len(p) for p in self.pending], dtype=torch.long),
                "pending": torch.tensor([t for p in self.pending for t in p], dtype=torch.long)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self.store.load_state_dict(state["store"])
        self.order_rng.set_state(state["order_rng"])
        self.refills = int(state["refills"])
        flat, at = state["pending"].tolist(), 0
        self.pending = []
        for n in state["pending_len"].tolist():
            self.pending.append(flat[at:at + n])
            at += n
