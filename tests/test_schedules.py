"""The learning-rate schedules (distill/trainer.py ``lr_lambda``) against torch's and transformers' own schedulers, and
the AdamW parameter groups (``param_groups``)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distill.config import TrainConfig
from distill.trainer import lr_lambda, param_groups


def train_cfg(**kw) -> TrainConfig:
    return TrainConfig(save="unused", total_iters=kw.pop("total_iters", 100), **kw)


def reference_lrs(scheduler_factory, steps: int, lr: float) -> list[float]:
    """The learning rate of each optimizer step 0..steps from a reference scheduler, stepped as the trainer steps its
    own (once after every optimizer step)."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = scheduler_factory(opt)
    out = []
    for _ in range(steps + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("lr_min", [0.0, 1e-7, 2e-5])
def test_cosine_without_warmup_is_torchs_cosine_annealing_and_ends_at_lr_min(lr_min: float) -> None:
    # The SRD release's schedule: cosine from --lr to --lr-min over the run, no warm-up (torch's CosineAnnealingLR).
    total, lr = 40, 1e-4
    cfg = train_cfg(lr=lr, lr_min=lr_min, total_iters=total, warmup_iters=0, lr_schedule="cosine")
    ref = reference_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=lr_min), total, lr)
    ours = [lr * lr_lambda(s, cfg, total) for s in range(total + 1)]
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert ours[0] == lr  # the first step at the peak: no warm-up
    assert lr * lr_lambda(total, cfg, total) == pytest.approx(lr_min, rel=1e-12, abs=1e-18)  # after the last step
    assert ours[-2] > lr_min  # the last step itself still learns
    # Past the end (a resumed run given more steps than planned never sees a rising rate).
    assert lr * lr_lambda(total + 7, cfg, total) == pytest.approx(lr_min, rel=1e-12, abs=1e-18)


def test_warmup_then_cosine_is_transformers_schedule_shifted_by_one_warmup_step() -> None:
    from transformers import get_cosine_schedule_with_warmup

    total, warmup, lr = 50, 10, 1e-3
    cfg = train_cfg(lr=lr, total_iters=total, warmup_iters=warmup, lr_schedule="cosine")
    ref = reference_lrs(lambda o: get_cosine_schedule_with_warmup(o, warmup, total), total, lr)
    ours = [lr * lr_lambda(s, cfg, total) for s in range(total + 1)]
    # Warm-up: linear up to the peak, which the step at index warmup - 1 already reaches (transformers' reaches it
    # one step later, so its first step has lr 0 — a step that does nothing).
    assert ours[:warmup] == pytest.approx([lr * (s + 1) / warmup for s in range(warmup)])
    assert ours[warmup - 1] == ours[warmup] == lr and min(ours[:-1]) > 0  # every step learns
    # After warm-up: the same half cosine down to lr_min (0 here) at the end.
    assert ours[warmup:] == pytest.approx(ref[warmup:], rel=1e-9, abs=1e-15)
    assert ours[-1] == pytest.approx(0.0, abs=1e-15)


def test_constant_schedule_is_flat_after_warmup_and_ignores_lr_min() -> None:
    total = 30
    for warmup in (0, 5):
        cfg = train_cfg(lr=1e-3, lr_min=1e-5, total_iters=total, warmup_iters=warmup, lr_schedule="constant")
        values = [lr_lambda(s, cfg, total) for s in range(total + 1)]
        assert values[warmup:] == [1.0] * (total + 1 - warmup)
        assert values[:warmup] == pytest.approx([(s + 1) / warmup for s in range(warmup)])


def test_cosine_midpoint_and_shape() -> None:
    # Independent of any library: cos(pi / 2) = 0 at the midpoint, so half-way between peak and floor there, and the
    # decay is monotone from peak to floor.
    total, lr, lr_min = 64, 2e-4, 2e-6
    cfg = train_cfg(lr=lr, lr_min=lr_min, total_iters=total, warmup_iters=0, lr_schedule="cosine")
    values = [lr * lr_lambda(s, cfg, total) for s in range(total + 1)]
    assert values[total // 2] == pytest.approx((lr + lr_min) / 2, rel=1e-12)
    assert all(a > b for a, b in zip(values, values[1:]))
    assert math.isclose(values[total // 4], lr_min + (lr - lr_min) * (1 + math.sqrt(0.5)) / 2, rel_tol=1e-12)


# ------------------------------------------------------------------------------------------------------------------
# Parameter groups


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 10, bias=False)
        self.scale = nn.Parameter(torch.ones(()))  # a 0-d parameter: no decay either


def ids(params) -> set[int]:
    return {id(p) for p in params}


def test_decay_only_on_matrices_and_every_trainable_tensor_once() -> None:
    model = Small()
    model.emb.weight.requires_grad_(False)  # frozen: in no group
    groups = param_groups(model, 0.05)
    by_decay = {g["weight_decay"]: ids(g["params"]) for g in groups}
    assert by_decay == {0.05: ids([model.proj.weight, model.head.weight]),
                        0.0: ids([model.proj.bias, model.norm.weight, model.norm.bias, model.scale])}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)


def test_no_empty_group_when_every_trainable_tensor_is_of_one_kind() -> None:
    only_matrices = Small()
    for p in (only_matrices.proj.bias, only_matrices.norm.weight, only_matrices.norm.bias, only_matrices.scale):
        p.requires_grad_(False)
    groups = param_groups(only_matrices, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1] and all(g["params"] for g in groups)

    only_vectors = Small()
    for p in (only_vectors.emb.weight, only_vectors.proj.weight, only_vectors.head.weight):
        p.requires_grad_(False)
    assert [g["weight_decay"] for g in param_groups(only_vectors, 0.1)] == [0.0]


def test_lora_student_gets_one_group_of_its_adapter_matrices() -> None:
    # LoRA trains only its A and B matrices (all 2-D): one group, decayed; the frozen base is in none.
    from transformers import GPT2Config, GPT2LMHeadModel

    from distill.models import apply_lora

    base = GPT2LMHeadModel(GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=2, n_head=2))
    model = apply_lora(base, r=4, alpha=8, dropout=0.0)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, _ in trainable)
    groups = param_groups(model, 0.01)
    assert len(groups) == 1 and groups[0]["weight_decay"] == 0.01
    assert ids(groups[0]["params"]) == ids(p for _, p in trainable)
