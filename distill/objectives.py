"""What a training step computes, per method.

An objective names its loss terms, counts the units each term averages over (response tokens, selected tokens),
returns per-term *sums* for a micro-batch, and combines per-term *means* linearly. The trainer divides each sum by the
term's count over the whole optimizer step — all gradient-accumulation micro-batches on all data-parallel ranks — so a
run's losses and gradients do not depend on how a global batch is split.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from data_utils.datasets import IGNORE_INDEX

if TYPE_CHECKING:
    from distill.config import DistillConfig


def response_mask(batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[B, T] bool: positions whose next token is a response token (the loss positions)."""
    return batch["labels"] != IGNORE_INDEX


def ce_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed token cross-entropy of [B, T, V] logits against pre-shifted [B, T] labels (-100 ignored), float32."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")


def forward_logits(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """[B, T, V] logits of a right-padded training batch.

    No attention mask is passed: with right padding a causal model's real tokens only ever attend to earlier, real
    tokens, and padded positions carry no loss, so the mask changes nothing but would force the slower masked
    attention path (and the default position ids 0..T-1 are already right)."""
    return model(input_ids=batch["input_ids"], use_cache=False).logits


class Objective:
    """Base: subclasses define ``terms``, ``counts``, ``sums`` and ``combine``."""

    terms: tuple[str, ...] = ()

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        raise NotImplementedError

    def sums(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def combine(self, means: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError


class SFTObjective(Objective):
    """Supervised fine-tuning: token cross-entropy on the response."""

    terms = ("ce",)

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        return {"ce": float(response_mask(batch).sum())}

    def sums(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"ce": ce_sum(forward_logits(model, batch), batch["labels"])}

    def combine(self, means: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return means["ce"]


class KDObjective(Objective):
    """White-box distillation: (1 - kd_ratio) * CE + kd_ratio * divergence(student, teacher) on response tokens.

    Both logits are cut to the tokenizer's vocabulary first, so rows a model only pads its embedding with never enter
    the divergence. The teacher runs without gradient. ``kd`` averages over the *selected* positions (all response
    positions unless ``token_ratio < 1``), ``ce`` over all response positions.
    """

    terms = ("ce", "kd")

    def __init__(self, teacher: nn.Module, cfg: "DistillConfig", vocab_size: int):
        self.teacher = teacher
        self.cfg = cfg
        self.vocab_size = vocab_size

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        from distill.losses import count_selected

        mask = response_mask(batch)
        return {"ce": float(mask.sum()), "kd": float(count_selected(mask, self.cfg.token_ratio))}

    def sums(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from distill.losses import distillation_loss

        logits = forward_logits(model, batch)
        with torch.no_grad():
            teacher_logits = forward_logits(self.teacher, batch)
        v = self.vocab_size
        c = self.cfg
        kd = distillation_loss(c.type, logits[..., :v], teacher_logits[..., :v], response_mask(batch),
                               temperature=c.temperature_kld, skew_alpha=c.skew_alpha, jsd_beta=c.jsd_beta,
                               token_ratio=c.token_ratio, token_score=c.token_score, labels=batch["labels"],
                               reduction="sum")
        return {"ce": ce_sum(logits, batch["labels"]), "kd": kd}

    def combine(self, means: Mapping[str, torch.Tensor]) -> torch.Tensor:
        r = self.cfg.kd_ratio
        return (1.0 - r) * means["ce"] + r * means["kd"]
