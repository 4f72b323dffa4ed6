"""Two objectives that exercise the engine's interface (distill/objectives.py), for the tests only — not features.

* :class:`GeneratedSFT` makes its own training batch in ``prepare``: the student answers the batch's prompts
  (``ctx.generate``: eval mode, ZeRO-3 gathered, sampled with the checkpointed ``ctx.rng``), and it trains with
  cross-entropy on those answers plus one earlier answer replayed from a buffer it keeps in its state. The global
  normalisation then counts generated tokens, whose number is only known after preparation.
* :class:`ProjectedFeatures` reads hidden states of both models (the teacher's without its logits) through a
  trainable projector from student to teacher width: CE + the squared error of the projected last hidden states at
  response positions.

Run as a script (``torchrun tests/engine_objectives.py generated|projected <train_distill.py flags>``) for the
multi-process checks.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data_utils.datasets import left_padded, prompts_of, response_batch
from distill.config import DistillConfig, GenerationConfig
from distill.objectives import Needs, Objective, Outputs, SFTObjective, StepContext, ce_sum, response_mask


class GeneratedSFT(SFTObjective):
    """CE on the student's own answers to the batch's prompts, plus one replayed answer per micro-batch."""

    def __init__(self, tokenizer: Any, do_sample: bool = True, max_new_tokens: int = 6, capacity: int = 8,
                 replay: bool = True):
        self.tokenizer, self.capacity, self.replay = tokenizer, capacity, replay
        self.gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=do_sample, top_k=0, top_p=1.0)
        self.buffer: list[tuple[list[int], list[int]]] = []
        self.prepared = 0  # micro-batches prepared: a counter that must survive a resume

    def prepare(self, micro_batches: list[dict[str, torch.Tensor]], ctx: StepContext) -> list[dict[str, torch.Tensor]]:
        out = []
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        for mb in micro_batches:
            prompts = prompts_of(mb)
            batch = left_padded(prompts, pad)
            answers = ctx.generate(batch["input_ids"].to(ctx.device), batch["attention_mask"].to(ctx.device), self.gen)
            fresh = [(p, a + [eos]) for p, a in zip(prompts, answers)]
            pairs = list(fresh)
            if self.replay and self.buffer:  # one replayed answer, chosen with the checkpointed generator
                pairs.append(self.buffer[int(torch.randint(len(self.buffer), (1,), generator=ctx.rng))])
            self.buffer = (self.buffer + fresh)[-self.capacity:]
            self.prepared += 1
            out.append(response_batch(pairs, pad))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": [[list(p), list(r)] for p, r in self.buffer], "prepared": self.prepared}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.buffer = [(list(p), list(r)) for p, r in state.get("buffer", [])]
        self.prepared = int(state.get("prepared", 0))


class ProjectedFeatures(Objective):
    """CE + squared error between a trainable projection of the student's last hidden states and the teacher's,
    summed over response positions and widths (averaged over response tokens by the trainer)."""

    terms = ("ce", "feat")
    student_needs = Needs(hidden_layers=(-1,))
    teacher_needs = Needs(logits=False, hidden_layers=(-1,))

    def __init__(self, student_width: int, teacher_width: int, seed: int = 0):
        torch.manual_seed(seed)
        self.projector = nn.Linear(student_width, teacher_width)

    def modules(self) -> dict[str, nn.Module]:
        return {"projector": self.projector}

    def counts(self, batch: Mapping[str, torch.Tensor]) -> dict[str, float]:
        n = float(response_mask(batch).sum())
        return {"ce": n, "feat": n}

    def sums(self, student: Outputs, teacher: Optional[Outputs], batch: Mapping[str, torch.Tensor],
             ctx: StepContext) -> dict[str, torch.Tensor]:
        assert teacher is not None and teacher.logits is None  # the teacher's output layer never ran
        mask = response_mask(batch)
        projected = self.projector(student.hidden[-1][mask])
        feat = ((projected.float() - teacher.hidden[-1][mask].float()) ** 2).sum()
        return {"ce": ce_sum(student.logits, batch["labels"]), "feat": feat}

    def combine(self, means: Mapping[str, torch.Tensor], ctx: StepContext) -> torch.Tensor:
        return means["ce"] + 0.1 * means["feat"]


def widths(student_path: str, teacher_path: str) -> tuple[int, int]:
    from transformers import AutoConfig

    return (AutoConfig.from_pretrained(student_path).hidden_size, AutoConfig.from_pretrained(teacher_path).hidden_size)


def main(which: str, argv: list[str], do_sample: bool = True, replay: bool = True) -> dict[str, Any]:
    """Trains the student with one of the objectives through the unchanged entry point and trainer
    (train_distill.py's flags; its --type and KD settings are unused)."""
    import train_distill
    from distill.entry import run_training

    def make(tokenizer: Any, extra: list[Any], env: Any, gen: Any) -> Objective:
        (cfg,) = extra
        if which == "generated":
            return GeneratedSFT(tokenizer, do_sample=do_sample, replay=replay)
        student = argv[argv.index("--model-path") + 1]
        return ProjectedFeatures(*widths(student, cfg.teacher_model_path))

    return run_training("engine test objective", make, extra_classes=[DistillConfig], argv=argv,
                        check_inputs=train_distill.check_inputs, teacher_of=train_distill.teacher_of)


if __name__ == "__main__":
    which, *rest = sys.argv[1:]
    own = ("--greedy", "--no-replay")
    main(which, [a for a in rest if a not in own], do_sample="--greedy" not in rest, replay="--no-replay" not in rest)
