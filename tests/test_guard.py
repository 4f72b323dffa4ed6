"""Numerical safety (distill/guard.py and the trainer's step): a step whose loss or gradient norm is not finite
changes nothing and is counted; too many in a row stop the run (exit 3) with the last good checkpoint intact; a
non-finite validation score never becomes the best checkpoint. Checked in the configurations whose update goes
through different code: ZeRO-0 fp32 (the trainer checks and clips), ZeRO-1 fp32 (DeepSpeed's ZeRO optimizer skips)
and ZeRO-0 bf16 (DeepSpeed's bf16 optimizer skips)."""
from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
import torch

from distill.entry import run_training
from distill.guard import StepGuard, TrainingDiverged, skippable
from distill.objectives import SFTObjective
from tests.conftest import REPO_ROOT, read_metrics, tiny_train_args, weights

pytestmark = pytest.mark.usefixtures("in_process")  # see conftest.in_process_run


class Faulty(SFTObjective):
    """SFT whose training loss (``loss_at``) or only its gradient (``grad_at``) is NaN at the given optimizer steps
    (one piece per step in these runs, so the count of training calls is the step), and whose validation loss is NaN
    from evaluation number ``eval_nan_from`` on."""

    def __init__(self, loss_at=(), grad_at=(), eval_nan_from=None):
        self.loss_at, self.grad_at, self.eval_nan_from = set(loss_at), set(grad_at), eval_nan_from
        self.step = 0
        self.evals = 0

    def sums(self, student, teacher, batch, ctx):
        out = super().sums(student, teacher, batch, ctx)
        if ctx.training:
            self.step += 1
            if self.step in self.loss_at:
                out["ce"] = out["ce"] * float("nan")
            if self.step in self.grad_at:
                # sqrt at 0: a finite value (0) whose gradient is inf * 0 = NaN.
                p = next(q for q in ctx.student.parameters() if q.requires_grad)
                out["ce"] = out["ce"] + torch.sqrt(p.sum() * 0.0)
        elif self.eval_nan_from is not None and self.evals >= self.eval_nan_from:
            out["ce"] = out["ce"] * float("nan")
        return out


def train(objective, model: Path, data: Path, save: Path, ds: str, *extra: str):
    args = tiny_train_args(model, data, save, "--lr-schedule", "constant", "--lr", "1e-3", "--batch-size", "4",
                           *extra)
    args[args.index("--deepspeed-config") + 1] = str(REPO_ROOT / "configs" / "deepspeed" / f"{ds}.json")
    return run_training("test", lambda tok, extra_cfgs, env, gen: objective, argv=args)


def test_step_guard_counts_and_stops() -> None:
    g = StepGuard(max_bad_steps=2)
    assert g.record(1, False, 1.0, 2.0) is None
    note = g.record(2, True, float("nan"), 3.0)
    assert note.startswith("step 2: loss nan; update skipped (1 in a row, 1 in all")
    assert g.record(3, False, 1.0, float("inf")) is None and g.consecutive == 0  # a good step resets the run
    assert "gradient norm inf" in g.record(4, True, 1.0, float("inf"))
    with pytest.raises(TrainingDiverged, match=r"step 5: .* in 2 consecutive steps \(--max-bad-steps 2\).*"
                                               r"last good checkpoint is runs/x/3"):
        g.record(5, True, float("nan"), None, "runs/x/3")
    g2 = StepGuard(3)
    g2.load(g.state())
    assert g2.state() == {"consecutive": 2, "total": 3}


def test_a_skipped_update_leaves_weights_and_adam_state_untouched() -> None:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(4))
    opt = skippable(torch.optim.AdamW)([p], lr=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    p.grad = torch.ones(4)
    opt.step()
    before, state = p.detach().clone(), {k: v.clone() for k, v in opt.state[p].items()}
    opt.skip_update = True
    p.grad = torch.full((4,), float("nan"))
    opt.step()
    assert torch.equal(p.detach(), before)
    assert all(torch.equal(opt.state[p][k], v) for k, v in state.items())


@pytest.mark.parametrize("ds,kind", [("ds_config_zero0_fp32", "loss"), ("ds_config_zero0_fp32", "grad"),
                                     ("ds_config_zero1_fp32", "grad"), ("ds_config_zero0_bf16", "loss")])
def test_non_finite_step_is_skipped_exactly(ds: str, kind: str, tiny_models: dict, processed_tiny: Path,
                                            tmp_path: Path) -> None:
    """A run of 3 steps whose step 3 is non-finite ends with the weights of a clean 2-step run: same data for steps
    1-2, a constant LR, and the skipped update touched neither the weights nor the optimizer."""
    student = tiny_models["gpt2"]["student"]
    faulty = Faulty(**{f"{kind}_at": [3]})
    train(faulty, student, processed_tiny, tmp_path / "bad", ds, "--total-iters", "3")
    train(SFTObjective(), student, processed_tiny, tmp_path / "clean", ds, "--total-iters", "2")
    a, b = weights(tmp_path / "bad" / "3"), weights(tmp_path / "clean" / "2")
    assert all(torch.equal(a[k], b[k]) for k in b)
    assert all(torch.isfinite(v.float()).all() for v in a.values())
    log = (tmp_path / "bad" / "log.txt").read_text()
    cause = "loss nan" if kind == "loss" else "gradient norm"
    assert f"step 3: {cause}" in log and "update skipped (1 in a row, 1 in all" in log
    last = [m for m in read_metrics(tmp_path / "bad") if m.get("train/skipped_steps") is not None][-1]
    assert last["train/skipped_steps"] == 1 and "train/loss" not in last  # the skipped step is not in the means


def test_diverged_run_stops_with_exit_3_and_keeps_the_last_good_checkpoint(
        tiny_models: dict, processed_tiny: Path, tmp_path: Path, capsys) -> None:
    save = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train(Faulty(loss_at=range(3, 100)), tiny_models["gpt2"]["student"], processed_tiny, save,
              "ds_config_zero0_fp32", "--total-iters", "20", "--save-interval", "2", "--max-bad-steps", "3")
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: step 5: loss nan and gradient norm nan in 3 consecutive steps (--max-bad-steps 3); the run stopped, its "
                       f"last good checkpoint is {save / '4'} — lower --lr, raise --warmup-iters or keep --clip-grad "
                       f"on, then start over (or --resume)")
    # Step 4 was saved after a skipped step 3: the weights of step 2, the last good update.
    assert sorted(p.name for p in save.iterdir() if p.name.isdigit()) == ["2", "4"]
    a, b = weights(save / "2"), weights(save / "4")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert "error: step 5" in (save / "log.txt").read_text()
    # The progress-line thread ended with the run: none keeps printing into the rest of this process.
    assert not [t for t in threading.enumerate() if t.name.startswith("progress-") and t.is_alive()]


def test_non_finite_validation_loss_never_becomes_best(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                       in_process) -> None:
    faulty = Faulty(eval_nan_from=1)
    save = tmp_path / "run"
    # The trainer evaluates at steps 2, 4, 6; count evaluations by the step counter (one call per step).
    orig = faulty.sums

    def sums(student, teacher, batch, ctx):
        faulty.evals = 0 if faulty.step < 4 else 1
        return orig(student, teacher, batch, ctx)

    faulty.sums = sums
    train(faulty, tiny_models["gpt2"]["student"], processed_tiny, save, "ds_config_zero0_fp32",
          "--total-iters", "6", "--eval-interval", "2", "--dev-num", "8")
    evals = [m for m in read_metrics(save) if "valid/loss" in m]
    assert [m["step"] for m in evals] == [2, 4, 6]
    assert math.isfinite(evals[0]["valid/loss"]) and all(math.isnan(m["valid/loss"]) for m in evals[1:])
    best = json.loads((save / "best.json").read_text())
    assert best["step"] == 2 and (save / "best").resolve() == (save / "2").resolve()
    assert "step 4: valid/loss is nan; this checkpoint cannot become the best" in (save / "log.txt").read_text()
