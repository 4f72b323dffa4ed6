"""The engine's interface (distill/objectives.py) and the objectives on it: declared outputs, the pretraining term and
its KD variant, and two test objectives (tests/engine_objectives.py) — one that generates its batch in ``prepare``,
one that reads hidden states through a trainable projector — run through the unchanged trainer: global token
normalisation over accumulation and ranks (ZeRO-0 and ZeRO-3 with a partitioned teacher), and exact resume of the
objective's RNG, buffer and modules."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from data_utils.datasets import InstructionDataset, LMCollator
from distill.config import DistillConfig
from distill.models import load_model, load_tokenizer
from distill.objectives import (LM_BATCH, KDObjective, Needs, StepContext, WithPretraining, forward_logits,
                                run_model, soft_ce_sum)
from distill.trainer import EXTRAS_FILE, STATE_FILE
from tests import engine_objectives
from tests.conftest import REPO_ROOT, free_port, max_abs_diff, read_metrics, run_checked, tiny_train_args, weights

DS = REPO_ROOT / "configs" / "deepspeed"


def batch_of(data: Path, tokenizer, n: int = 4) -> dict[str, torch.Tensor]:
    valid = InstructionDataset(data, "valid")
    return LMCollator(tokenizer.pad_token_id, tokenizer.eos_token_id, 128)([valid[i] for i in range(n)])


# ------------------------------------------------------------------------------------------------------------------
# declared outputs and loss terms, against plain references


def test_run_model_gives_what_was_declared(tiny_models: dict, processed_tiny: Path) -> None:
    path = str(tiny_models["gpt2"]["teacher"])
    model, tok = load_model(path).eval(), load_tokenizer(path)
    batch = batch_of(processed_tiny, tok)
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], output_hidden_states=True)
        plain = run_model(model, batch, Needs())
        hidden = run_model(model, batch, Needs(hidden_layers=(0, 2, -1)))
        fused = run_model(model, batch, Needs(logits=False, last_hidden=True))
    assert plain.hidden == {} and plain.last_hidden is None
    assert torch.equal(plain.logits, ref.logits)
    assert set(hidden.hidden) == {0, 2, -1}
    for i in (0, 2, -1):
        assert torch.equal(hidden.hidden[i], ref.hidden_states[i])
    assert fused.logits is None  # the output layer ran on no position
    # the final hidden states and the output-layer weight give the logits (a fused loss builds them chunk by chunk)
    torch.testing.assert_close(fused.last_hidden @ fused.output_weight.T, ref.logits, rtol=1e-5, atol=1e-5)


def test_soft_cross_entropy_matches_its_definition() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11, dtype=torch.float64).float().requires_grad_()
    teacher = torch.randn(2, 5, 11)
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)
    got = soft_ce_sum(logits, teacher, mask)
    ref_logits = logits.detach().double().requires_grad_()
    ref = -(teacher.double().softmax(-1) * ref_logits.log_softmax(-1)).sum(-1)[mask].sum()
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    got.backward()
    ref.backward()
    torch.testing.assert_close(logits.grad.double(), ref_logits.grad, rtol=1e-5, atol=1e-6)


def test_pretraining_term_is_an_ordinary_term_with_a_kd_variant(tiny_models: dict, processed_tiny: Path) -> None:
    """(1 - r) * CE + r * soft-CE on the pretraining batch, added to the inner objective with its coefficient."""
    student = load_model(str(tiny_models["gpt2"]["student"])).eval()
    teacher = load_model(str(tiny_models["gpt2"]["teacher"])).eval()
    tok = load_tokenizer(str(tiny_models["gpt2"]["student"]))
    batch, lm = batch_of(processed_tiny, tok, 4), batch_of(processed_tiny, tok, 2)
    batch = {**batch, LM_BATCH: lm}
    kd = KDObjective(DistillConfig(teacher_model_path="t", kd_ratio=0.5, lm_kd_ratio=0.5), len(tok))
    obj = WithPretraining(kd, coef=2.0, kd_ratio=kd.pretraining_kd_ratio, vocab_size=len(tok))
    ctx = StepContext(step=0, total_steps=1, epoch=0.0, stage=0, rng=torch.Generator(), student=student,
                      teacher=teacher, tokenizer=tok, device=torch.device("cpu"))
    assert obj.terms == ("ce", "kd", "lm")
    counts = obj.counts(batch)
    assert counts["lm"] == float((lm["labels"] != -100).sum()) > 0
    with torch.no_grad():
        sums = obj.sums(run_model(student, batch, Needs()), run_model(teacher, batch, Needs()), batch, ctx)
        s_logits, t_logits = forward_logits(student, lm), forward_logits(teacher, lm)
    mask = lm["labels"] != -100
    ce = F.cross_entropy(s_logits[mask], lm["labels"][mask], reduction="sum")
    soft = -(t_logits[mask].softmax(-1) * s_logits[mask].log_softmax(-1)).sum()
    torch.testing.assert_close(sums["lm"], 0.5 * ce + 0.5 * soft, rtol=1e-5, atol=1e-4)
    means = {k: sums[k] / counts[k] for k in obj.terms}
    torch.testing.assert_close(obj.combine(means, ctx), kd.combine(means, ctx) + 2.0 * means["lm"])
    # without a pretraining batch (validation) the term is 0 and counts nothing
    plain = {k: v for k, v in batch.items() if k != LM_BATCH}
    assert obj.counts(plain)["lm"] == 0.0


def test_the_pretraining_batch_survives_an_inner_objective_that_makes_new_batches() -> None:
    class Rebuild(KDObjective):
        def prepare(self, micro_batches, ctx):  # new dicts, as a generating objective makes them
            return [{k: v.clone() for k, v in mb.items()} for mb in micro_batches]

    cfg = DistillConfig(teacher_model_path="t")
    obj = WithPretraining(Rebuild(cfg, 10), coef=1.0)
    lm = {"input_ids": torch.ones(1, 3, dtype=torch.long), "labels": torch.ones(1, 3, dtype=torch.long),
          "attention_mask": torch.ones(1, 3, dtype=torch.long)}
    mbs = [{"input_ids": torch.zeros(2, 4, dtype=torch.long), "labels": torch.zeros(2, 4, dtype=torch.long),
            "attention_mask": torch.ones(2, 4, dtype=torch.long), LM_BATCH: lm},
           {"input_ids": torch.zeros(1, 4, dtype=torch.long), "labels": torch.zeros(1, 4, dtype=torch.long),
            "attention_mask": torch.ones(1, 4, dtype=torch.long)}]
    out = obj.prepare(mbs, None)
    assert out[0][LM_BATCH] is lm and LM_BATCH not in out[1]
    assert obj.counts(out[0])["lm"] == 3.0 and obj.counts(out[1])["lm"] == 0.0


# ------------------------------------------------------------------------------------------------------------------
# the two test objectives through the trainer


def args(student: Path, teacher: Path, data: Path, save: Path, *extra: str, ds: str = "ds_config_zero0_fp32") -> list:
    out = tiny_train_args(student, data, save, "--teacher-model-path", str(teacher), "--lr-schedule", "constant",
                          "--lr", "3e-3", "--dev-num", "4", "--eval-batch-size", "4", "--max-new-tokens", "4", *extra)
    out[out.index("--deepspeed-config") + 1] = str(DS / f"{ds}.json")
    return out


def train_entries(run: Path) -> list[dict]:
    return [m for m in read_metrics(run) if "train/loss" in m]


def torchrun(which: str, argv: list[str], env: dict[str, str], *flags: str) -> None:
    run_checked([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                 free_port(), str(REPO_ROOT / "tests" / "engine_objectives.py"), which, *argv, *flags], env,
                timeout=400)


@pytest.mark.parametrize("which", ["generated", "projected"])
def test_global_normalisation_holds_for_objectives_that_prepare_or_read_hidden_states(
        which: str, tiny_models: dict, processed_tiny: Path, tmp_path: Path, subprocess_env: dict,
        in_process) -> None:
    """batch 8, batch 4 x 2 accumulation, and 2 processes x batch 4 under ZeRO-3 (student, projector and teacher
    partitioned; generation with gathered parameters) train the same weights. The generating objective's token
    counts are known only after preparation."""
    student, teacher = tiny_models["gpt2"]["student"], tiny_models["gpt2"]["teacher"]
    common = ("--total-iters", "3")
    # Greedy and without replay here: every row's batch is then the same whichever rank or micro-batch holds it.
    sample = {"do_sample": False, "replay": False} if which == "generated" else {}
    runs = {k: tmp_path / k for k in ("b8", "b4_gas2", "2proc_zero3")}
    engine_objectives.main(which, args(student, teacher, processed_tiny, runs["b8"], *common, "--batch-size", "8"),
                           **sample)
    engine_objectives.main(which, args(student, teacher, processed_tiny, runs["b4_gas2"], *common, "--batch-size",
                                       "4", "--gradient-accumulation-steps", "2"), **sample)
    torchrun(which, args(student, teacher, processed_tiny, runs["2proc_zero3"], *common, "--batch-size", "4",
                         ds="ds_config_zero3_fp32"), subprocess_env, *(["--greedy", "--no-replay"] if sample else []))
    assert "parameters, fp32, partitioned over 2 ranks (ZeRO-3)" in (runs["2proc_zero3"] / "log.txt").read_text()
    logged = {k: train_entries(r) for k, r in runs.items()}
    for k, entries in logged.items():
        assert [m["step"] for m in entries] == [1, 2, 3], k
        for m, ref in zip(entries, logged["b8"]):
            for term in ("train/ce", "train/feat") if which == "projected" else ("train/ce",):
                assert m[term] == pytest.approx(ref[term], rel=1e-6, abs=1e-5), (k, term, m["step"])
    final = {k: weights(r / "3") for k, r in runs.items()}
    init = {k: v for k, v in load_file(str(student / "model.safetensors")).items() if k in final["b8"]}
    assert max_abs_diff(final["b8"], init) > 1e-3
    # ZeRO-3 reduces gradients in another order, and Adam turns float noise in near-zero gradients into steps of up
    # to the learning rate (3e-3): its tolerance is wider; the losses above hold to 1e-6 either way.
    tolerance = {"b4_gas2": 1e-5, "2proc_zero3": 1e-4}
    for k, tol in tolerance.items():
        assert max_abs_diff(final[k], final["b8"]) < tol, k
    if which == "projected":
        proj = {k: load_file(str(r / "3" / EXTRAS_FILE)) for k, r in runs.items()}
        assert set(proj["b8"]) == {"projector.weight", "projector.bias"}
        ref = engine_objectives.ProjectedFeatures(*engine_objectives.widths(str(student), str(teacher)))
        assert float((proj["b8"]["projector.weight"] - ref.projector.weight.detach()).abs().max()) > 1e-3  # trained
        for k, tol in tolerance.items():
            assert max_abs_diff(proj[k], proj["b8"]) < tol, k
    else:
        # the generated batches were what the loss averaged over: fewer tokens than the data's responses
        assert all(m["train/ce"] > 0 for m in logged["b8"])


@pytest.mark.parametrize("which", ["generated", "projected"])
def test_resume_restores_the_objectives_rng_buffer_and_modules(which: str, tiny_models: dict, processed_tiny: Path,
                                                               tmp_path: Path, in_process) -> None:
    """Killed after its step-2 checkpoint, a run resumes to the same step-4 weights, projector and buffer as an
    uninterrupted run: sampling draws from the checkpointed generator, the replay buffer is in the checkpoint."""
    student, teacher = tiny_models["gpt2"]["student"], tiny_models["gpt2"]["teacher"]
    common = ("--total-iters", "4", "--save-interval", "2", "--keep-optimizer-states", "2", "--batch-size", "4")
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    engine_objectives.main(which, args(student, teacher, processed_tiny, run_a, *common))
    shutil.copytree(run_a / "2", run_b / "2")
    engine_objectives.main(which, args(student, teacher, processed_tiny, run_b, *common, "--resume"))
    assert f"resumed from {run_b / '2'} (step 2)" in (run_b / "log.txt").read_text()
    assert (run_b / "4" / STATE_FILE).is_file()
    a, b = train_entries(run_a), train_entries(run_b)
    assert [m["train/loss"] for m in b] == [m["train/loss"] for m in a[2:]]
    assert max_abs_diff(weights(run_a / "2"), weights(run_a / "4")) > 1e-4
    assert max_abs_diff(weights(run_a / "4"), weights(run_b / "4")) == 0.0
    if which == "projected":
        assert max_abs_diff(load_file(str(run_a / "4" / EXTRAS_FILE)), load_file(str(run_b / "4" / EXTRAS_FILE))) == 0.0
    else:
        state_a = torch.load(run_a / "4" / "rng_state_0.pt", weights_only=True)
        state_b = torch.load(run_b / "4" / "rng_state_0.pt", weights_only=True)
        assert state_a["objective"]["prepared"] == state_b["objective"]["prepared"] == 4
        assert state_a["objective"]["buffer"] == state_b["objective"]["buffer"] != []
        assert torch.equal(state_a["objective_rng"], state_b["objective_rng"])
    summary = json.loads((run_b / "run_summary.json").read_text())
    assert summary["steps"] == 4 and summary["launches"] == 2


def test_a_prepare_that_changes_the_number_of_micro_batches_is_refused(tiny_models: dict, processed_tiny: Path,
                                                                       tmp_path: Path, in_process) -> None:
    """DeepSpeed's accumulation boundary counts on one prepared batch per micro-batch: another number stops the
    first step with a line naming the objective, not a silently wrong update."""
    from distill.entry import run_training
    from distill.objectives import SFTObjective

    class Merging(SFTObjective):
        def prepare(self, micro_batches, ctx):
            return micro_batches[:1]

    argv = tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, tmp_path / "run", "--total-iters", "1",
                           "--batch-size", "2", "--gradient-accumulation-steps", "2")
    with pytest.raises(RuntimeError, match="Merging.prepare returned 1 micro-batches for 2"):
        run_training("test", lambda tok, extra, env, gen: Merging(), argv=argv)
