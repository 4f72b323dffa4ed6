"""MiniLLM (distill/minillm.py): the PPO loss, rewards and advantages against hand-worked numbers, the single-step term
against the exact reverse KL, the rollout store, and runs of train_minillm.py (exact resume; bad input)."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distill.minillm import (Rollout, RolloutStore, advantages, ppo_loss_sum, remaining_tokens, reverse_kl_sum,
                             rewards_to_go, token_logprobs, token_rewards, whiten)
from tests.conftest import REPO_ROOT, max_abs_diff, read_metrics, tiny_train_args, weights


def test_the_ppo_loss_equals_a_hand_computation_with_tokens_clipped_on_both_sides() -> None:
    # token 0: ratio 1.5 > 1.2 with A = +1 -> clipped at 1.2: -1.2;   token 1: ratio 0.5 < 0.8 with A = -2 -> clipped
    # at 0.8: +1.6;   token 2: ratio 1.1 (from the importance weight) inside the range, A = 0.5: -0.55;   token 3:
    # off the mask.
    old = torch.tensor([[-1.0, -1.0, -2.0, -3.0]])
    new = old + torch.log(torch.tensor([[1.5, 0.5, 1.0, 7.0]]))
    adv = torch.tensor([[1.0, -2.0, 0.5, 9.0]])
    w = torch.tensor([[1.0, 1.0, 1.1, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clipped = ppo_loss_sum(new, old, adv, w, mask, cliprange=0.2)
    assert float(loss) == pytest.approx(-1.2 + 1.6 - 0.55, abs=1e-6)
    assert float(clipped) == 2
    # Inside the range the gradient is the plain policy gradient -A * ratio * d logprob; clipped tokens give none.
    new = new.clone().requires_grad_(True)
    ppo_loss_sum(new, old, adv, w, mask, 0.2)[0].backward()
    assert new.grad.tolist()[0] == pytest.approx([0.0, 0.0, -0.5 * 1.1, 0.0], abs=1e-6)


def test_rewards_to_go_and_length_normalised_advantages_equal_a_hand_worked_example() -> None:
    rewards = torch.tensor([[1.0, 2.0, 3.0, 5.0], [4.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # gamma 0.5: G2 = 3, G1 = 2 + 0.5 * 3 = 3.5, G0 = 1 + 0.5 * 3.5 = 2.75 (the reward past the mask never counts)
    assert rewards_to_go(rewards, mask, 0.5).tolist() == [[2.75, 3.5, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]]
    assert remaining_tokens(mask).tolist() == [[3.0, 2.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    assert torch.allclose(advantages(rewards, mask, 0.5, length_norm=True),
                          torch.tensor([[2.75 / 3, 3.5 / 2, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]]))
    assert advantages(rewards, mask, 0.5, length_norm=False).tolist() == rewards_to_go(rewards, mask, 0.5).tolist()
    # rewards: (log p_T - log q_old) / 0.5, clipped to +-1.5
    r = token_rewards(torch.tensor([[-1.0, -2.0, -1.2]]), torch.tensor([[-2.0, -1.0, -1.0]]),
                      torch.tensor([[1, 1, 1]]), scaling=0.5, clip=1.5)
    assert r.tolist()[0] == pytest.approx([1.5, -1.5, -0.4])
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    wm = whiten(x, torch.tensor([[1, 1, 1, 0]]), mean=2.0, var=2 / 3)
    assert wm.tolist()[0] == pytest.approx([-1.2247, 0.0, 1.2247, 0.0], abs=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_the_single_step_term_is_the_exact_reverse_kl(temperature: float) -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 30, generator=g) * 2, torch.randn(2, 5, 30, generator=g) * 2
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    q, p = torch.softmax(s.double() / temperature, -1), torch.softmax(t.double() / temperature, -1)
    exact = (q * (q.log() - p.log())).sum(-1)[mask].sum()
    assert float(reverse_kl_sum(s, t, mask, temperature)) == pytest.approx(float(exact), rel=1e-5)
    labels = torch.where(mask, torch.arange(5).expand(2, 5), torch.full((2, 5), -100))
    lp = token_logprobs(s, labels, temperature)
    ref = torch.log_softmax(s / temperature, -1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * mask
    assert torch.allclose(lp, ref, atol=1e-6)


def test_the_store_walks_ppo_epochs_shuffled_passes_then_asks_for_a_refill() -> None:
    store = RolloutStore([Rollout([i], [i + 10], [0.0], [0.0], [0.0], [1.0]) for i in range(6)])
    g = torch.Generator().manual_seed(0)
    seen = []
    while not store.used_up(ppo_epochs=3, n=2):
        seen.append(tuple(r.prompt[0] for r in store.take(2, g)))
    assert len(seen) == 9  # 3 passes of 6 // 2 batches
    passes = [sorted(i for b in seen[k:k + 3] for i in b) for k in (0, 3, 6)]
    assert passes == [list(range(6))] * 3  # every pass covers the store once
    assert len({tuple(seen[k:k + 3]) for k in (0, 3, 6)}) > 1  # reshuffled between passes
    restored = RolloutStore()
    restored.load_state_dict(store.state_dict())
    assert restored.rollouts == store.rollouts and restored.order == store.order and restored.passes == store.passes
    odd = RolloutStore([Rollout([i], [1], [0.0], [0.0], [0.0], [1.0]) for i in range(5)])
    assert sum(1 for _ in iter(lambda: odd.used_up(1, 2), True) if odd.take(2, g)) == 2  # drop_last: 5 // 2


# ------------------------------------------------------------------------------------------------- train_minillm.py ---
def minillm_args(tiny_models: dict, data: Path, save: Path, *extra: str) -> list[str]:
    return tiny_train_args(tiny_models["gpt2"]["student"], data, save, "--teacher-model-path",
                           str(tiny_models["gpt2"]["teacher"]), "--batch-size", "4", "--num-rollouts", "8",
                           "--max-new-tokens", "12", "--warmup-iters", "2", "--no-eval-gen", "--eval-interval", "0",
                           "--lr", "1e-3", *extra)


def test_minillm_resumes_its_rollout_store_to_identical_weights(tiny_models: dict, processed_tiny: Path,
                                                               tmp_path: Path, in_process) -> None:
    """Killed after step 3 — inside a store's second PPO pass (8 rollouts, batch 4: 2 micro-batches a pass, 4 passes
    = 8 steps a store) — the run resumes with the store, its shuffled order and position, and ends with the weights
    of an uninterrupted run; a second store is sampled on the way (step 9)."""
    import train_minillm

    common = ("--total-iters", "10", "--save-interval", "3", "--keep-optimizer-states", "4")
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    train_minillm.main(minillm_args(tiny_models, processed_tiny, run_a, *common))
    shutil.copytree(run_a / "3", run_b / "3")
    train_minillm.main(minillm_args(tiny_models, processed_tiny, run_b, *common, "--resume"))
    assert f"resumed from {run_b / '3'} (step 3)" in (run_b / "log.txt").read_text()
    state = {r: torch.load(r / "10" / "rng_state_0.pt", weights_only=True)["objective"] for r in (run_a, run_b)}
    assert state[run_a]["refills"] == state[run_b]["refills"] == 2
    assert torch.equal(state[run_a]["store"]["tokens"], state[run_b]["store"]["tokens"])
    assert max_abs_diff(weights(run_a / "3"), weights(run_a / "10")) > 1e-4
    assert max_abs_diff(weights(run_a / "10"), weights(run_b / "10")) == 0.0
    rows = [m for m in read_metrics(run_a) if "train/pg" in m]
    assert len(rows) == 10 and all(math.isfinite(m["train/loss"]) for m in rows)
    for key in ("train/reward", "train/reward_std", "train/reg", "train/response_len", "train/clip_fraction",
                "train/weight_min", "train/weight_max", "train/rollout_seconds", "train/prepare_share"):
        assert key in rows[0], key
    assert rows[0]["train/weight_min"] < 1.0 < rows[0]["train/weight_max"] + 1e-9  # teacher-mixed (0.2 default)
    summary = json.loads((run_a / "run_summary.json").read_text())
    assert summary["steps"] == 10 and summary["prepare_seconds"] > 0


def test_minillm_stops_after_its_passes_over_the_prompts(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                         in_process) -> None:
    """--epochs counts passes over the prompts (with 4 PPO epochs a pass is 4x the micro-batches of the prompts);
    with --total-iters too, whichever comes first."""
    import train_minillm

    save = tmp_path / "run"
    train_minillm.main(minillm_args(tiny_models, processed_tiny, save, "--total-iters", "3", "--epochs", "1"))
    assert json.loads((save / "run_summary.json").read_text())["steps"] == 3  # --total-iters first
    from distill.config import MiniLLMConfig
    from distill.minillm import MiniLLMObjective

    obj = MiniLLMObjective(MiniLLMConfig(teacher_model_path="t", num_rollouts=8), None, None, 10, 0, 1)
    assert obj.steps_per_epoch(50, 1, 4) == 200  # 200 prompts: 25 stores x 2 batches x 4 PPO epochs


@pytest.mark.parametrize("flags,needle", [
    (["--num-rollouts", "2", "--batch-size", "4"], "--num-rollouts 2"),
    (["--top-k", "5"], "--do-sample --top-k 0 --top-p 1.0"),
    (["--teacher-mixed-alpha", "1.0"], "--teacher-mixed-alpha"),
    (["--max-length", "100"], "--max-length 100: leaves no room"),
    (["--ppo-epochs", "0"], "--ppo-epochs"),
])
def test_bad_minillm_input_is_one_line(flags: list, needle: str, tiny_models: dict, processed_tiny: Path,
                                       tmp_path: Path) -> None:
    args = ["--model-path", str(tiny_models["gpt2"]["student"]), "--data-dir", str(processed_tiny), "--save",
            str(tmp_path / "run"), "--teacher-model-path", str(tiny_models["gpt2"]["teacher"]), "--max-length",
            "128", "--report-to", "none", "--deepspeed-config",
            str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp32.json"), *flags]
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "train_minillm.py"), *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]


def test_two_ranks_under_zero3_sample_rollouts_and_whiten_over_both(tiny_models: dict, processed_tiny: Path,
                                                                   tmp_path: Path, subprocess_env: dict) -> None:
    """2 processes, ZeRO-3: each rank samples its share of the rollouts with both models gathered, the advantages are
    whitened with statistics over both ranks, and the run ends with finite losses."""
    from tests.conftest import free_port, run_checked

    save = tmp_path / "zero3"
    argv = minillm_args(tiny_models, processed_tiny, save, "--total-iters", "3")
    argv[argv.index("--deepspeed-config") + 1] = str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero3_fp32.json")
    argv[argv.index("--num-rollouts") + 1] = "16"  # 8 per rank
    run_checked([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                 free_port(), str(REPO_ROOT / "train_minillm.py"), *argv], subprocess_env, timeout=400)
    assert "partitioned over 2 ranks (ZeRO-3)" in (save / "log.txt").read_text()
    states = [torch.load(save / "3" / f"rng_state_{r}.pt", weights_only=True)["objective"] for r in (0, 1)]
    assert [len(s["store"]["prompt_len"]) for s in states] == [8, 8]  # each rank its own share of 16
    assert not torch.equal(states[0]["store"]["tokens"], states[1]["store"]["tokens"])
    rows = [m for m in read_metrics(save) if "train/pg" in m]
    assert len(rows) == 3 and all(math.isfinite(m["train/loss"]) for m in rows)


def test_prompt_data_dir_and_seed_lm_mean_what_they_mean_in_lmops(tiny_models: dict, processed_tiny: Path,
                                                                 processed_tiny_lm: Path, tmp_path: Path,
                                                                 in_process, monkeypatch) -> None:
    """--prompt-data-dir is the data (LMOps' name for the prompts), --seed-lm orders the pretraining corpus, and the
    rollouts' time split is logged (the teacher's share of it too)."""
    import train_minillm
    from distill import trainer as trainer_module

    seeds = []
    real = trainer_module.MicroBatchStream

    class Recording(real):  # type: ignore[misc,valid-type]
        def __init__(self, dataset, collate, batch_size, seed, *args, **kwargs):
            seeds.append((type(dataset).__name__, seed))
            super().__init__(dataset, collate, batch_size, seed, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "MicroBatchStream", Recording)
    argv = minillm_args(tiny_models, processed_tiny, tmp_path / "run", "--total-iters", "1", "--seed-lm", "123",
                        "--lm-data-dir", str(processed_tiny_lm))
    i = argv.index("--data-dir")
    argv[i] = "--prompt-data-dir"
    train_minillm.main(argv)
    assert ("LMDataset", 123) in seeds
    row = next(m for m in read_metrics(tmp_path / "run") if "train/pg" in m)
    assert row["train/rollout_seconds"] > 0 and 0 < row["train/teacher_seconds"] <= row["train/rollout_seconds"]
    assert math.isfinite(row["train/lm"])
