"""Selective feature distillation: one more loss term, on top of any objective, aligning chosen student layers with the
teacher's most important units (Khsaadi/KD-LLMs, docs/feature_kd.md).

Per refresh (``--selection-refresh N`` steps; 0: once) the teacher's units of each ``--teacher-layer-indices`` layer
— residual-stream units (``--hidden``) and/or MLP intermediate units (``--mlp``) — are scored by ``--method``
(distill/features.py: gradient x activation, integrated gradients, max |activation|, random) w.r.t. the teacher's
log-likelihood of a response — the teacher's own sampled answer to the batch's prompts (``--attribution-on
sample``, as the original) or the batch's response — summed over the step's micro-batches and all ranks (so every
rank keeps the same units), and the top k are kept (k: the student's width, or ``--student-hidd-size`` /
``--student-mlp-size``). In every step the paired student layer's features are compared with the selected teacher
units at the response positions (or all non-pad ones) by the alignment losses of distill/feature_losses.py, weighted
by ``--alpha-corr/--alpha-cos/--alpha-mse/--alpha-mse-std`` and averaged over the layer pairs: the term ``feat``.
When the student's width differs from k, a linear projector per pair is a trainable module of the objective.
The selection is part of the checkpoint. The teacher's weights get no gradient.
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Optional

import torch
from torch import nn

from distill.objectives import Needs, Objective, Outputs, StepContext

KIND_FLAGS = (("hidden", "hidden"), ("mlp", "mlp"))


class WithFeatures(Objective):
    """``inner`` plus the feature term ``feat`` (module docstring)."""

    def __init__(self, inner: Objective, cfg: Any, tokenizer: Any, gen: Any):
        self.inner, self.cfg, self.tokenizer, self.gen = inner, cfg, tokenizer, gen
        self.kinds = [k for k, flag in KIND_FLAGS if getattr(cfg, flag)]
        self.pairs = list(zip(cfg.student_layers, cfg.teacher_layers))
        self.terms = (*inner.terms, "feat")
        hidden = tuple(s for s, _ in self.pairs) if "hidden" in self.kinds else ()
        mlp = tuple(s for s, _ in self.pairs) if "mlp" in self.kinds else ()
        t_hidden = tuple(t for _, t in self.pairs) if "hidden" in self.kinds else ()
        t_mlp = tuple(t for _, t in self.pairs) if "mlp" in self.kinds else ()
        self.student_needs = inner.student_needs.merged(Needs(logits=False, hidden_layers=hidden, mlp_layers=mlp))
        self.teacher_needs = Needs(logits=False, hidden_layers=t_hidden, mlp_layers=t_mlp).merged(inner.teacher_needs)
        for name in ("pretraining_kd_ratio", "evaluate_at_start", "draws_own_batches", "stop_at_first_limit"):
            setattr(self, name, getattr(inner, name))
        self.steps_per_epoch = inner.steps_per_epoch  # type: ignore[method-assign]
        self.selection: dict[str, torch.Tensor] = {}  # "<kind>:<teacher layer>" -> kept unit indices
        self.widths: dict[str, int] = {}  # "<kind>:<student layer>" -> the student's width there
        self.projectors = nn.ModuleDict()
        self.selected_at = -1  # the step of the last selection
        self._metrics: dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- set-up ---
    def _k(self, kind: str, student_layer: int) -> int:
        own = self.cfg.student_hidd_size if kind == "hidden" else self.cfg.student_mlp_size
        return int(own or self.widths[f"{kind}:{student_layer}"])

    def attach(self, student: nn.Module) -> None:
        from distill.feature_losses import make_projector
        from distill.features import ModelAdapter

        self.inner.attach(student)
        adapter = ModelAdapter(student)
        for kind in self.kinds:
            for s, _ in self.pairs:
                self.widths[f"{kind}:{s}"] = adapter.width(kind, s)
                projector = make_projector(self.widths[f"{kind}:{s}"], self._k(kind, s), seed=len(self.projectors))
                if projector is not None:  # the student's width differs from the units kept
                    self.projectors[f"{kind}_{s}".replace("-", "m")] = projector

    def modules(self) -> dict[str, nn.Module]:
        out = dict(self.inner.modules())
        if len(self.projectors):
            out["feature_projectors"] = self.projectors
        return out

    # ---------------------------------------------------------------------------------------- selection ---
    def _due(self, ctx: StepContext) -> bool:
        refresh = self.cfg.selection_refresh
        if not self.selection:
            return True
        return refresh > 0 and ctx.step % refresh == 0 and ctx.step != self.selected_at

    def _attribution_batches(self, micro_batches: list[dict[str, torch.Tensor]],
                             ctx: StepContext) -> list[dict[str, torch.Tensor]]:
        if self.cfg.attribution_on == "data":
            return micro_batches
        from data_utils.datasets import response_batch
        from distill.onpolicy import student_answers

        out = []
        for mb in micro_batches:  # the teacher's own sampled answer to each prompt (as the original, each refresh)
            pairs = student_answers(mb, ctx, self.gen, self.tokenizer, which="teacher")
            out.append(response_batch(pairs, self.tokenizer.pad_token_id, ctx.max_length))
        return out

    def select(self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext) -> None:
        from distill import dist
        from distill.features import attribute_units, selection_overlap, top_units

        t0 = time.perf_counter()
        batches = [b for b in self._attribution_batches(micro_batches, ctx) if bool((b["labels"] != -100).any())]
        teacher_layers = [t for _, t in self.pairs]
        new: dict[str, torch.Tensor] = {}
        with ctx.policy("teacher") as teacher:
            for kind in self.kinds:
                total: dict[int, torch.Tensor] = {}
                for b in batches:
                    b = {k: v.to(ctx.device) for k, v in b.items() if k in ("input_ids", "labels", "attention_mask")}
                    scores = attribute_units(teacher, b, teacher_layers, kind=kind, method=self.cfg.method,
                                             positions="response" if self.cfg.feature_positions == "response"
                                             else "all", ig_steps=self.cfg.ig_steps, seed=ctx.step)
                    for t, sc in scores.items():
                        total[t] = total.get(t, 0) + sc.float().cpu()
                for s, t in self.pairs:
                    scores = total.get(t)
                    width = len(scores) if scores is not None else 0
                    # Every rank keeps the same units: the scores are summed over ranks first.
                    summed = torch.tensor(dist.all_reduce_sum(scores.tolist() if scores is not None else [0.0] * width,
                                                              ctx.device).tolist())
                    new[f"{kind}:{t}"] = top_units(summed, self._k(kind, s))
        if self.selection:
            overlaps = [selection_overlap(self.selection[k], v) for k, v in new.items() if k in self.selection]
            if overlaps:
                self._metrics["selection_overlap"] = sum(overlaps) / len(overlaps)
        self.selection, self.selected_at = new, ctx.step
        self._metrics["attribution_seconds"] = time.perf_counter() - t0

    def prepare(self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext) -> list[dict[str, torch.Tensor]]:
        self._metrics = {}
        out = self.inner.prepare(micro_batches, ctx)
        if self._due(ctx):
            self.select(out, ctx)
        return out

    # --------------------------------------------------------------------------------------------- loss ---
    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        from distill.feature_losses import position_mask

        n = float(position_mask(batch, self.cfg.feature_positions).sum()) if self.selection else 0.0
        return {**self.inner.counts(batch), "feat": n if n >= 2 else 0.0}

    def sums(self, student: Outputs, teacher: Optional[Outputs], batch: Mapping[str, torch.Tensor],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        from distill.feature_losses import feature_alignment_loss, gather_positions, position_mask, project

        out = self.inner.sums(student, teacher, batch, ctx)
        assert teacher is not None
        mask = position_mask(batch, self.cfg.feature_positions)
        if not self.selection or int(mask.sum()) < 2:  # nothing selected yet (an evaluation before training)
            out["feat"] = torch.zeros((), device=ctx.device)
            return out
        pairs = []
        for kind in self.kinds:
            for s, t in self.pairs:
                s_act = student.hidden[s] if kind == "hidden" else student.mlp[s]
                t_act = teacher.hidden[t] if kind == "hidden" else teacher.mlp[t]
                picked = gather_positions(t_act.detach(), mask)[:, self.selection[f"{kind}:{t}"].to(t_act.device)]
                name = f"{kind}_{s}".replace("-", "m")
                projector = self.projectors[name] if name in self.projectors else None
                pairs.append((project(gather_positions(s_act, mask), projector), picked))
        c = self.cfg
        loss = feature_alignment_loss(pairs, alpha_corr=c.alpha_corr, alpha_cos=c.alpha_cos, alpha_rel_l1=c.alpha_mse,
                                      alpha_mse=c.alpha_mse_std,
                                      corr_variant="barlow" if c.corr_weighting == "barlow" else "original_weights",
                                      reduction="sum")
        out["feat"] = loss.total
        return out

    def combine(self, means: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        return self.inner.combine(means, ctx) + means["feat"]

    # ------------------------------------------------------------------------------------ logs and state ---
    def step_metrics(self) -> dict[str, float]:
        m = {**self.inner.step_metrics(), **self._metrics}
        m.setdefault("attribution_seconds", 0.0)
        return m

    def on_evaluate(self, metrics: Mapping[str, float], ctx: StepContext) -> None:
        self.inner.on_evaluate(metrics, ctx)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "selection": {k: v.clone() for k, v in self.selection.items()},
                "selected_at": self.selected_at}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        self.inner.load_state_dict(state.get("inner", {}))
        self.selection = {k: v.long() for k, v in state.get("selection", {}).items()}
        self.selected_at = int(state.get("selected_at", -1))


def with_features(objective: Objective, cfg: Any, tokenizer: Any, gen: Any) -> Objective:
    """``objective`` with the feature term when ``--method`` is given, else unchanged."""
    return WithFeatures(objective, cfg, tokenizer, gen) if cfg.enabled else objective
