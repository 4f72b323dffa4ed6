"""On-policy distillation (distill/onpolicy.py): the generated batch's layout, the replay buffer, the GKD and DistiLLM
schedules, TRL's generalised JSD, exact resume of a run with a buffer, and the one-line refusals of bad input."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from data_utils.datasets import IGNORE_INDEX, LMCollator, response_batch
from distill.config import DistillConfig, GenerationConfig
from distill.kinds import split_type, trl_generalized_jsd
from distill.losses import distillation_loss
from distill.objectives import StepContext
from distill.onpolicy import OnPolicyKD, ReplayBuffer, raised_threshold, sampling_threshold, student_answers
from tests.conftest import REPO_ROOT, max_abs_diff, read_metrics, tiny_train_args, weights

EOS, PAD = 0, 0


class FakeTokenizer:
    pad_token_id, eos_token_id = PAD, EOS

    def __len__(self) -> int:
        return 50


def fake_ctx(answers=None, step: int = 0, total: int = 100, max_length: int = 64, seed: int = 0) -> StepContext:
    """A context whose "student" answers with fixed token rows (as ctx.generate returns them: cut after EOS)."""
    ctx = StepContext(step=step, total_steps=total, epoch=0.0, stage=0, rng=torch.Generator().manual_seed(seed),
                      student=None, teacher=None, tokenizer=FakeTokenizer(), device=torch.device("cpu"),
                      max_length=max_length, shared_rng=torch.Generator().manual_seed(seed + 1))
    ctx.calls = []

    def generate(input_ids, attention_mask, gen, which="student", keep_eos=False):
        ctx.calls.append((input_ids.clone(), attention_mask.clone(), gen, which, keep_eos))
        return [list(a) for a in answers[: input_ids.shape[0]]]

    ctx.generate = generate
    return ctx


def data_batch(prompts, responses, max_length=64):
    items = [{"prompt": p, "response": r, "index": i} for i, (p, r) in enumerate(zip(prompts, responses))]
    return LMCollator(PAD, EOS, max_length)(items)


def cfg(**kw) -> DistillConfig:
    return DistillConfig(teacher_model_path="t", student_gen=True, **kw)


# ------------------------------------------------------------------------------------------- generated batch ---
def test_a_generated_batch_masks_the_prompt_and_what_follows_eos_and_matches_the_collator() -> None:
    prompts = [[5, 6, 7], [8, 9]]
    mb = data_batch(prompts, [[11, 12], [13, 14, 15, 16]])
    # Row 0 ends with EOS; row 1 ran into the length limit (no EOS).
    ctx = fake_ctx(answers=[[21, EOS], [23, 24, 25, 26]])
    pairs = student_answers(mb, ctx, GenerationConfig(max_new_tokens=4), FakeTokenizer())
    assert [p for p, _ in pairs] == prompts  # the prompts, recovered from the pre-shifted batch
    input_ids, attention_mask, gen, which, keep_eos = ctx.calls[0]
    assert which == "student" and keep_eos
    assert input_ids.tolist() == [[5, 6, 7], [PAD, 8, 9]] and attention_mask.tolist() == [[1, 1, 1], [0, 1, 1]]
    batch = response_batch(pairs, PAD, 64)
    # The loss falls on the generated tokens only: after the prompt, up to and including the EOS, then nothing.
    assert batch["labels"].tolist() == [[-100, -100, 21, EOS, -100], [-100, 23, 24, 25, 26]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    # The collator's layout: an answer that ended is a data row with that response (the collator adds its EOS).
    ref = data_batch(prompts[:1], [[21]])
    for k in ("input_ids", "labels", "attention_mask"):
        assert torch.equal(batch[k][:1, : ref[k].shape[1]], ref[k]), k


def test_generation_never_runs_past_max_length() -> None:
    mb = data_batch([[5, 6, 7, 8]], [[1, 2]])
    ctx = fake_ctx(answers=[[1, 2]], max_length=6)
    student_answers(mb, ctx, GenerationConfig(max_new_tokens=50), FakeTokenizer())
    assert ctx.calls[0][2].max_new_tokens == 2  # 6 - 4 prompt tokens
    with pytest.raises(ValueError, match="no room to generate"):
        student_answers(mb, fake_ctx(answers=[[1]], max_length=4), GenerationConfig(max_new_tokens=5), FakeTokenizer())


# ----------------------------------------------------------------------------------------------- the buffer ---
def test_the_replay_buffer_keeps_its_capacity_evicts_oldest_first_and_samples_what_was_put_in() -> None:
    buf = ReplayBuffer(capacity=5)
    entries = [([i], [100 + i, EOS]) for i in range(8)]
    buf.add(entries[:3])
    assert len(buf) == 3 and not buf.full
    buf.add(entries[3:])
    assert len(buf) == 5 and buf.full
    assert list(buf.entries) == entries[3:]  # 0, 1, 2 went first
    rng = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(200):
        draw = buf.sample(3, rng)
        keys = [p[0] for p, _ in draw]
        assert len(set(keys)) == 3  # distinct entries
        seen.update(keys)
    assert seen == {3, 4, 5, 6, 7}  # only (and every one of) the entries in the buffer
    with pytest.raises(ValueError):
        buf.sample(6, rng)
    restored = ReplayBuffer(5)
    restored.load_state_dict(buf.state_dict())
    assert list(restored.entries) == list(buf.entries)


# --------------------------------------------------------------------------------------------- the schedules ---
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_the_fraction_of_on_policy_micro_batches_matches_mixed_alpha(alpha: float) -> None:
    obj = OnPolicyKD(cfg(type="mixed-jsd", mixed_alpha=alpha), 50, FakeTokenizer(), GenerationConfig())
    ctx = fake_ctx()
    n = 4000
    fresh = sum(obj.choose(ctx) == "fresh" for _ in range(n))
    sigma = math.sqrt(n * alpha * (1 - alpha))
    assert abs(fresh - n * alpha) <= 4 * sigma + 1e-9  # a 4-sigma binomial band: fails by chance < 1e-4
    # Ranks hold the same shared generator, so they take the same decisions, micro-batch by micro-batch.
    rank0, rank1 = fake_ctx(seed=3), fake_ctx(seed=3)
    assert [obj.choose(rank0) for _ in range(50)] == [obj.choose(rank1) for _ in range(50)]


def test_a_mixed_step_trains_on_a_draw_from_the_buffer_holding_the_fresh_outputs() -> None:
    obj = OnPolicyKD(cfg(type="mixed-fkl", mixed_alpha=1.0, capacity=8), 50, FakeTokenizer(),
                     GenerationConfig(max_new_tokens=4))
    prompts = [[5, 6], [7, 8]]
    ctx = fake_ctx(answers=[[30, EOS], [31, 32, EOS]])
    (out,) = obj.prepare([data_batch(prompts, [[1], [2]])], ctx)
    assert len(obj.buffer) == 2 and obj.sources["fresh"] == 1
    rows = {tuple(r[r != IGNORE_INDEX].tolist()) for r in out["labels"]}
    assert rows == {(30, EOS), (31, 32, EOS)}  # the buffer held exactly the fresh outputs: a draw of 2 is them
    assert obj.step_metrics()["gen_tokens"] == 5 and obj.step_metrics()["fresh_share"] == 1.0


def test_the_adaptive_schedule_generates_replays_or_uses_the_data_as_released() -> None:
    obj = OnPolicyKD(cfg(type="adaptive-sfkl", capacity=2), 50, FakeTokenizer(), GenerationConfig(max_new_tokens=4))
    obj.threshold = 0.0  # threshold 0: always the data
    ctx = fake_ctx(answers=[[30, EOS], [31, EOS]])
    assert all(obj.choose(ctx) == "data" for _ in range(200))
    obj.threshold = 1.0  # threshold 1, buffer not full: always fresh
    assert all(obj.choose(ctx) == "fresh" for _ in range(50))
    obj.buffer.add([([1], [2]), ([3], [4])])  # full now: fresh with samp = thr (1 - step/total), else replay
    late = fake_ctx(step=89, total=100)  # samp = 1 - 90/100 = 0.1
    picks = [obj.choose(late) for _ in range(4000)]
    assert set(picks) == {"fresh", "replay"}
    assert abs(picks.count("fresh") / 4000 - 0.1) < 0.02
    assert sampling_threshold(0.6, 0.25, "decreasing") == pytest.approx(0.45)
    assert sampling_threshold(0.6, 0.25, "increasing") == pytest.approx(0.15)
    assert sampling_threshold(0.6, 0.25, "constant") == pytest.approx(0.3)


def test_the_adaptive_threshold_rises_when_the_validation_loss_worsens_by_loss_eps() -> None:
    obj = OnPolicyKD(cfg(type="adaptive-srkl", init_threshold=0.0, loss_eps=0.1), 50, FakeTokenizer(),
                     GenerationConfig())
    assert obj.evaluate_at_start  # the reference is the loss before training
    ctx = fake_ctx()
    # Scripted validation CE: reference 2.0; 2.05 (< +0.1: stays); 2.10 (+0.1: rises, new ref 2.10); 1.9 (better:
    # stays); 2.15 (< 2.10 + 0.1: stays); 2.25 (rises, ref 2.25); then 12 rises to the cap of 1.
    thresholds = []
    for loss in [2.0, 2.05, 2.10, 1.9, 2.15, 2.25] + [12.0 + i for i in range(12)]:
        obj.on_evaluate({"valid/ce": loss, "valid/loss": 0.0}, ctx)
        thresholds.append(round(obj.threshold, 6))
    assert thresholds[:6] == [0.0, 0.0, 0.1, 0.1, 0.1, 0.2]
    assert thresholds[-1] == 1.0 and all(b >= a for a, b in zip(thresholds, thresholds[1:]))  # never falls
    assert raised_threshold(0.95, 1.0, 5.0, 0.1) == (1.0, 5.0)
    obj2 = OnPolicyKD(cfg(type="adaptive-srkl"), 50, FakeTokenizer(), GenerationConfig())
    obj2.load_state_dict(obj.state_dict())
    assert (obj2.threshold, obj2.reference) == (obj.threshold, obj.reference)


# --------------------------------------------------------------------------------------- TRL's generalised JSD ---
def trl_generalized_jsd_loss(student_logits, teacher_logits, beta):
    """TRL's GKDTrainer.generalized_jsd_loss (summed over the vocabulary per position), written out as TRL does."""
    s, t = torch.log_softmax(student_logits, -1), torch.log_softmax(teacher_logits, -1)
    kl = lambda inp, target: torch.nn.functional.kl_div(inp, target, reduction="none", log_target=True)  # KL(tgt||inp)
    if beta == 0:
        return kl(s, t).sum(-1)
    if beta == 1:
        return kl(t, s).sum(-1)
    b = torch.tensor(beta, dtype=s.dtype)
    m = torch.logsumexp(torch.stack([s + torch.log(1 - b), t + torch.log(b)]), dim=0)
    return (b * kl(m, t) + (1 - b) * kl(m, s)).sum(-1)


@pytest.mark.parametrize("beta,kind", [(0.0, "fkl"), (0.5, "jsd"), (1.0, "rkl"), (0.1, "jsd"), (0.8, "jsd")])
def test_trls_generalised_jsd_equals_the_toolkits_kinds(beta: float, kind: str) -> None:
    g = torch.Generator().manual_seed(int(beta * 10))
    student, teacher = torch.randn(2, 5, 40, generator=g) * 3, torch.randn(2, 5, 40, generator=g) * 3
    mask = torch.ones(2, 5, dtype=torch.bool)
    mapped, jsd_beta = trl_generalized_jsd(beta)
    assert mapped == kind and (kind != "jsd" or jsd_beta == pytest.approx(1 - beta))  # TRL beta = 1 - --jsd-beta
    ours = distillation_loss(mapped, student, teacher, mask, jsd_beta=jsd_beta, reduction="sum")
    ref = trl_generalized_jsd_loss(student.double(), teacher.double(), beta).sum()
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    c = cfg(type="mixed-jsd", gkd_beta=beta)
    assert c.divergence() == (mapped, jsd_beta)


def test_type_prefixes_are_parsed_not_matched() -> None:
    assert split_type("mixed-jsd") == ("mixed", "jsd") and split_type("adaptive-tsfkl") == ("adaptive", "tsfkl")
    assert split_type("fkl") == ("", "fkl") and split_type("nomixed-fkl") == ("", "nomixed-fkl")
    assert cfg(type="adaptive-sfkl").divergence() == ("sfkl", 0.9)
    assert not DistillConfig(teacher_model_path="t", type="mixed-jsd").on_policy  # no --student-gen: data only


# ------------------------------------------------------------------------------------------------ end to end ---
def onpolicy_args(tiny_models: dict, data: Path, save: Path, *extra: str) -> list[str]:
    return tiny_train_args(tiny_models["gpt2"]["student"], data, save, "--teacher-model-path",
                           str(tiny_models["gpt2"]["teacher"]), "--student-gen", "--kd-ratio", "1.0",
                           "--gen-max-new-tokens", "8", "--batch-size", "4", "--capacity", "8", *extra)


def test_resume_of_a_gkd_run_with_a_buffer_gives_identical_weights(tiny_models: dict, processed_tiny: Path,
                                                                  tmp_path: Path, in_process) -> None:
    import train_distill

    common = ("--type", "mixed-jsd", "--mixed-alpha", "0.5", "--total-iters", "6", "--save-interval", "3",
              "--keep-optimizer-states", "2")
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    train_distill.main(onpolicy_args(tiny_models, processed_tiny, run_a, *common))
    shutil.copytree(run_a / "3", run_b / "3")
    train_distill.main(onpolicy_args(tiny_models, processed_tiny, run_b, *common, "--resume"))
    assert f"resumed from {run_b / '3'} (step 3)" in (run_b / "log.txt").read_text()
    state_a = torch.load(run_a / "6" / "rng_state_0.pt", weights_only=True)
    state_b = torch.load(run_b / "6" / "rng_state_0.pt", weights_only=True)
    a, b = state_a["objective"], state_b["objective"]
    assert len(a["buffer"]["lengths"]) == 8  # the buffer filled and evicted
    assert 0 < a["sources"]["fresh"] < 6 and a["sources"] == b["sources"]
    assert torch.equal(a["buffer"]["tokens"], b["buffer"]["tokens"])
    assert torch.equal(state_a["shared_rng"], state_b["shared_rng"])
    assert max_abs_diff(weights(run_a / "3"), weights(run_a / "6")) > 1e-4
    assert max_abs_diff(weights(run_a / "6"), weights(run_b / "6")) == 0.0
    logged = [m for m in read_metrics(run_a) if "train/loss" in m]
    assert all(math.isfinite(m["train/loss"]) for m in logged)
    assert any(m["train/fresh_share"] > 0 for m in logged) and "train/prepare_share" in logged[0]
    # a step that generated logs the generated tokens/s
    assert all(m["train/gen_tokens_per_s"] > 0 for m in logged if m["train/gen_seconds"] > 0)
    assert any("train/gen_tokens_per_s" in m for m in logged)


def test_an_adaptive_run_evaluates_first_and_logs_its_threshold(tiny_models: dict, processed_tiny: Path,
                                                                tmp_path: Path, in_process) -> None:
    import train_distill

    save = tmp_path / "run"
    train_distill.main(onpolicy_args(tiny_models, processed_tiny, save, "--type", "adaptive-sfkl",
                                     "--init-threshold", "0.5", "--total-iters", "4", "--eval-interval", "2"))
    rows = read_metrics(save)
    assert rows[0]["step"] == 0 and "valid/ce" in rows[0]  # the reference evaluation, before any step
    train = [m for m in rows if "train/threshold" in m]
    assert train and all(m["train/threshold"] >= 0.5 for m in train)
    import json

    summary = json.loads((save / "run_summary.json").read_text())
    assert summary["best"]["step"] > 0 and summary["prepare_seconds"] > 0


# ---------------------------------------------------------------------------------------------- bad input ---
@pytest.mark.parametrize("flags,needle", [
    (["--type", "mixed-jsd", "--student-gen", "--capacity", "2", "--batch-size", "4"], "--capacity 2"),
    (["--type", "mixed-jsd", "--student-gen", "--max-length", "100"], "--max-length 100: leaves no room"),
    (["--type", "mixed-jsd", "--student-gen", "--gen-num-beams", "0"], "--gen-num-beams"),
    (["--type", "mixed-jsd", "--student-gen", "--gen-max-new-tokens", "0"], "--gen-max-new-tokens"),
    (["--type", "mixed-jsd", "--student-gen", "--gen-top-p", "0"], "--gen-top-p"),
    (["--type", "mixed-jsd", "--student-gen", "--gen-temperature", "0"], "--gen-temperature"),
    (["--type", "mixed-jsd", "--student-gen", "--mixed-alpha", "1.5"], "--mixed-alpha"),
    (["--type", "mixed-rkl", "--student-gen", "--gkd-beta", "0.5"], "--gkd-beta"),
    (["--type", "mixed-xyz", "--student-gen"], "unknown kind"),
])
def test_bad_on_policy_input_is_one_line_before_any_model_loads(flags: list, needle: str, tiny_models: dict,
                                                               processed_tiny: Path, tmp_path: Path) -> None:
    args = ["--model-path", str(tiny_models["gpt2"]["student"]), "--data-dir", str(processed_tiny), "--save",
            str(tmp_path / "run"), "--teacher-model-path", str(tiny_models["gpt2"]["teacher"]),
            "--total-iters", "1", "--max-length", "128"]
    args += flags  # later flags win
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "train_distill.py"), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr
    assert not (tmp_path / "run" / "log.txt").exists()  # nothing started


def test_student_gen_without_a_teacher_is_refused_in_one_line(tiny_models: dict, processed_tiny: Path,
                                                             tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "train_distill.py"), "--model-path",
                           str(tiny_models["gpt2"]["student"]), "--data-dir", str(processed_tiny), "--save",
                           str(tmp_path / "run"), "--total-iters", "1", "--type", "mixed-jsd", "--student-gen"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--student-gen: needs a teacher" in proc.stderr, proc.stderr


def test_two_ranks_under_zero3_take_the_same_decisions_and_generate_together(tiny_models: dict, processed_tiny: Path,
                                                                            tmp_path: Path, subprocess_env: dict) -> None:
    """2 processes, ZeRO-3 (student and teacher partitioned): generation gathers the parameters collectively, so the
    ranks must agree on every micro-batch's source — they draw from the shared generator — or the run would hang."""
    from tests.conftest import free_port, run_checked

    save = tmp_path / "zero3"
    argv = onpolicy_args(tiny_models, processed_tiny, save, "--type", "mixed-jsd", "--mixed-alpha", "0.5",
                         "--total-iters", "4")
    ds = argv.index("--deepspeed-config") + 1
    argv[ds] = str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero3_fp32.json")
    run_checked([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                 free_port(), str(REPO_ROOT / "train_distill.py"), *argv], subprocess_env, timeout=400)
    assert "partitioned over 2 ranks (ZeRO-3)" in (save / "log.txt").read_text()
    states = [torch.load(save / "4" / f"rng_state_{r}.pt", weights_only=True) for r in (0, 1)]
    assert states[0]["objective"]["sources"] == states[1]["objective"]["sources"]
    assert states[0]["objective"]["sources"]["fresh"] > 0
    # Each rank keeps its own buffer of its own prompts' answers.
    assert not torch.equal(states[0]["objective"]["buffer"]["tokens"], states[1]["objective"]["buffer"]["tokens"])
    logged = [m for m in read_metrics(save) if "train/loss" in m]
    assert len(logged) == 4 and all(math.isfinite(m["train/loss"]) for m in logged)
