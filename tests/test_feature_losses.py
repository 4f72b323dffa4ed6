"""Tests for distill/feature_losses.py: positions, projector, each feature-alignment loss (zero at equality, positive
otherwise, gradient only into the student side), the original's formulas against a hand computation and a
transcription of the release's code, and the layer-pair sum."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_utils.datasets import LMCollator
from distill.feature_losses import (
    CORR_WEIGHTINGS,
    STD_EPS,
    cosine_loss,
    cross_correlation_loss,
    feature_alignment_loss,
    gather_positions,
    make_projector,
    mse_loss,
    original_cross_correlation_loss,
    position_mask,
    project,
    relative_l1_loss,
    term_count,
)

N, K = 64, 8


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def decorrelated(n: int, k: int, seed: int) -> torch.Tensor:
    """[n, k] columns with mean 0, biased variance 1 and zero cross-covariance (orthonormal centred columns × √n)."""
    x = rand(n, k, seed=seed).double()
    q, _ = torch.linalg.qr(x - x.mean(dim=0))
    return (q * math.sqrt(n)).float()


# The losses that are a function of (student, teacher) alone, with their default settings.
LOSSES = {
    "corr": cross_correlation_loss,
    "corr_original_weights": lambda s, t, **kw: cross_correlation_loss(s, t, weighting="original", **kw),
    "cos": cosine_loss,
    "rel_l1": relative_l1_loss,
    "mse": mse_loss,
    "mse_raw": lambda s, t, **kw: mse_loss(s, t, standardise_columns=False, **kw),
}


# ------------------------------------------------------------------------------------------------------ positions


def test_positions_pick_exactly_the_response_or_the_nonpad_positions():
    # Row 0: prompt 5 6 7, response 8 9; row 1: prompt 5, response 8 9 10; EOS 2 appended, pad 0. Pre-shifted and cut
    # by one, row 0 reads 5 6 7 8 9 (targets 8 9 2 from position 2), row 1 reads 5 8 9 10 (targets 8 9 10 2 from 0).
    collate = LMCollator(pad_token_id=0, eos_token_id=2, max_length=32)
    batch = collate([{"index": 0, "prompt": np.array([5, 6, 7]), "response": np.array([8, 9])},
                     {"index": 1, "prompt": np.array([5]), "response": np.array([8, 9, 10])}])
    B, L = batch["input_ids"].shape
    assert (B, L) == (2, 5)
    # hidden[b, l] = (b, l, 100 b + l): each gathered row names its position.
    b_idx, l_idx = torch.meshgrid(torch.arange(B), torch.arange(L), indexing="ij")
    hidden = torch.stack([b_idx, l_idx, 100 * b_idx + l_idx], dim=-1).float()

    got = gather_positions(hidden, position_mask(batch))
    assert got[:, :2].long().tolist() == [[0, 2], [0, 3], [0, 4], [1, 0], [1, 1], [1, 2], [1, 3]]
    got = gather_positions(hidden, position_mask(batch, "nonpad"))
    assert got[:, :2].long().tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [1, 0], [1, 1], [1, 2], [1, 3]]
    # The teacher is gathered with the same mask: rows stay paired token for token.
    teacher = hidden * 10.0
    assert torch.equal(gather_positions(teacher, position_mask(batch)), got[[2, 3, 4, 5, 6, 7, 8]] * 10.0)

    with pytest.raises(ValueError, match="positions='sideways' is unknown"):
        position_mask(batch, "sideways")
    with pytest.raises(ValueError, match=r"mask must be \[B, L\]"):
        gather_positions(hidden, position_mask(batch)[:, :3])
    with pytest.raises(ValueError, match="mask must be bool"):
        gather_positions(hidden, batch["attention_mask"])


# ------------------------------------------------------------------------------------------------------ projector


def test_projector_maps_to_k_is_seeded_and_absent_when_widths_agree():
    assert make_projector(K, K) is None
    state = torch.random.get_rng_state()
    p1, p2 = make_projector(6, K, seed=3), make_projector(6, K, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # its own generator: the global stream is untouched
    assert torch.equal(p1.weight, p2.weight) and torch.equal(p1.bias, p2.bias)
    assert not torch.equal(p1.weight, make_projector(6, K, seed=4).weight)
    assert project(rand(N, 6, seed=0), p1).shape == (N, K)
    with pytest.raises(ValueError, match="k=0 must be a positive int"):
        make_projector(6, 0)


# ------------------------------------------------------------------------------------------------------ zero / positive


@pytest.mark.parametrize("name", ["cos", "rel_l1", "mse", "mse_raw"])
def test_per_position_losses_are_zero_at_equality_and_positive_otherwise(name):
    fn = LOSSES[name]
    t = rand(N, K, seed=1)
    assert float(fn(t.clone(), t)) == pytest.approx(0.0, abs=1e-6)
    assert float(fn(t + 0.5 * rand(N, K, seed=2), t)) > 0.05


def test_standardised_mse_ignores_per_unit_scale_and_offset_the_raw_one_does_not():
    t = rand(N, K, seed=1)
    s = t * torch.linspace(0.5, 3.0, K) + torch.arange(K).float()
    assert float(mse_loss(s, t)) == pytest.approx(0.0, abs=1e-5)
    assert float(mse_loss(s, t, standardise_columns=False)) > 1.0


@pytest.mark.parametrize("weighting", sorted(CORR_WEIGHTINGS))
def test_correlation_is_zero_for_equal_decorrelated_features_and_positive_otherwise(weighting):
    t = decorrelated(N, K, seed=1)
    # C = I / (1 + eps) exactly here: the diagonal part is k (eps / (1 + eps))² ≈ 1e-9, the off-diagonal part 0.
    assert float(cross_correlation_loss(t.clone(), t, weighting=weighting)) == pytest.approx(0.0, abs=1e-6)
    assert float(cross_correlation_loss(t[:, torch.randperm(K, generator=torch.Generator().manual_seed(0))], t,
                                        weighting=weighting)) > 1e-3
    assert float(cross_correlation_loss(t + rand(N, K, seed=2), t, weighting=weighting)) > 1e-3


def test_correlation_at_equality_keeps_the_teachers_own_off_diagonal_correlations():
    # Correlated teacher columns: S = T zeroes the diagonal part only; the off-diagonal part is then Σ_{i≠j} R_ij² of
    # the teacher's Pearson correlation matrix R (torch.corrcoef, computed without this module).
    t = rand(N, K, seed=1) @ (torch.eye(K) + 0.5 * rand(K, K, seed=2))
    r = torch.corrcoef(t.T.double())
    off = float((r.pow(2).sum() - r.diagonal().pow(2).sum()))
    assert off > 0.1
    assert float(cross_correlation_loss(t, t, w_off=0.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(cross_correlation_loss(t, t, w_diag=0.0, w_off=1.0)) == pytest.approx(off, rel=1e-4)
    assert float(cross_correlation_loss(t, t)) == pytest.approx(0.005 * off, rel=1e-4)
    # With fewer positions than units (N - 1 < k) the teacher's columns cannot be uncorrelated: the floor on the
    # off-diagonal sum at S = T is k² / (N - 1) - k.
    few = rand(5, K, seed=3)
    assert float(cross_correlation_loss(few, few, w_diag=0.0, w_off=1.0)) >= K * K / 4 - K - 1e-3


# ------------------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_reaches_student_and_projector_never_the_teacher(name):
    torch.manual_seed(0)
    teacher_layer = torch.nn.Linear(5, K)  # the teacher's features require grad: the loss must not give them any
    teacher = teacher_layer(rand(N, 5, seed=1))
    student = rand(N, 6, seed=2).requires_grad_()
    projector = make_projector(6, K, seed=0)
    loss = LOSSES[name](project(student, projector), teacher)
    loss.backward()
    assert teacher_layer.weight.grad is None and teacher_layer.bias.grad is None
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert projector.weight.grad.abs().sum() > 0
    if name in ("corr", "corr_original_weights", "mse"):
        # Standardised losses cannot see the projector's bias: its gradient is 0 up to rounding.
        assert projector.bias.grad.abs().max() < 1e-5
    else:
        assert projector.bias.grad.abs().sum() > 1e-4


def test_layer_pair_loss_sends_no_gradient_to_the_teacher():
    teacher = rand(N, K, seed=1).requires_grad_()
    student = rand(N, K, seed=2).requires_grad_()
    out = feature_alignment_loss([(student, teacher)], alpha_corr=1.0, alpha_cos=1.0, alpha_rel_l1=1.0,
                                 alpha_mse=1.0)
    out.total.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------------ the original


def hand_corr(s: list[list[float]], t: list[list[float]], *, unbiased: bool, eps: float, per_element: bool,
              w_diag: float, w_off: float) -> float:
    """The correlation loss written out in plain Python floats."""
    n, k = len(s), len(s[0])

    def z(x):
        cols = []
        for j in range(k):
            col = [x[r][j] for r in range(n)]
            m = sum(col) / n
            var = sum((v - m) ** 2 for v in col) / (n - 1 if unbiased else n)
            cols.append([(v - m) / math.sqrt(var + eps) for v in col])
        return cols  # column-major

    zs, zt = z(s), z(t)
    div = n * k if per_element else n
    c = [[sum(zs[i][r] * zt[j][r] for r in range(n)) / div for j in range(k)] for i in range(k)]
    on = sum((c[i][i] - 1) ** 2 for i in range(k))
    off = sum(c[i][j] ** 2 for i in range(k) for j in range(k) if i != j)
    return w_diag * on + w_off * off


S_SMALL = [[1.0, 2.0], [3.0, 0.0], [2.0, 5.0], [0.0, 1.0]]
T_SMALL = [[2.0, 1.0], [1.0, 1.0], [4.0, 3.0], [0.5, -2.0]]


def test_original_correlation_matches_a_hand_computation_of_its_formula():
    s, t = torch.tensor(S_SMALL), torch.tensor(T_SMALL)
    # The release: unbiased std without eps, C over N·k elements, 0.005 on the diagonal, 1 off it.
    want = hand_corr(S_SMALL, T_SMALL, unbiased=True, eps=0.0, per_element=True, w_diag=0.005, w_off=1.0)
    assert float(original_cross_correlation_loss(s, t)) == pytest.approx(want, rel=1e-5)
    # Its weighting on the corrected C (over N, biased variance + eps), and the default weighting.
    for weighting, (wd, wo) in CORR_WEIGHTINGS.items():
        want = hand_corr(S_SMALL, T_SMALL, unbiased=False, eps=STD_EPS, per_element=False, w_diag=wd, w_off=wo)
        assert float(cross_correlation_loss(s, t, weighting=weighting)) == pytest.approx(want, rel=1e-5)


def test_relative_l1_is_the_originals_mse_by_hand():
    s = torch.tensor([[1.0, -1.0], [0.0, 2.0]])
    t = torch.tensor([[3.0, 1.0], [0.0, 2.0]])
    # |1-3|/(1+3) = 0.5, |-1-1|/(1+1) = 1, 0/(0+0+1e-8) = 0, 0/4 = 0: mean 1.5 / 4.
    assert float(relative_l1_loss(s, t)) == pytest.approx(0.375, abs=1e-7)


# Transcribed from the release (Khsaadi/KD-LLMs minillm/trainer.py compute_corr / compute_mse / compute_cos, device
# moves dropped): features [B, L, d] compared at the non-pad positions of the attention mask.
def release_select(x, y, attention_mask):
    mask = attention_mask.unsqueeze(-1).expand_as(x).bool()
    dim = y.size(-1)
    sel = torch.masked_select(y, mask)
    return torch.masked_select(x, mask).view(-1, dim), sel.view(-1, dim), sel


def release_corr(x, y, attention_mask):
    z1, z2, sel = release_select(x, y, attention_mask)
    z1_norm = (z1 - torch.mean(z1, dim=0)) / torch.std(z1, dim=0)
    z2_norm = (z2 - torch.mean(z2, dim=0)) / torch.std(z2, dim=0)
    cross_corr = torch.matmul(z1_norm.float().T, z2_norm.float()) / sel.size(0)
    on_diag = torch.diagonal(cross_corr).add_(-1).pow_(2).sum()
    n = cross_corr.shape[0]
    off_diag = cross_corr.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten().pow_(2).sum()
    return 0.005 * on_diag + off_diag


def release_mse(x, y, attention_mask):
    z1, z2, _ = release_select(x, y, attention_mask)
    return torch.mean(torch.abs(z1 - z2) / (torch.abs(z1) + torch.abs(z2) + 1e-8))


def release_cos(x, y, attention_mask):
    z1, z2, _ = release_select(x, y, attention_mask)
    return torch.mean(1 - F.cosine_similarity(z1, z2, dim=-1))


def test_original_options_reproduce_the_release_code_at_its_positions():
    x, y = rand(3, 7, K, seed=1), rand(3, 7, K, seed=2) + 0.3 * rand(3, 7, K, seed=1)
    attention_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    mask = position_mask({"attention_mask": attention_mask}, "nonpad")
    s, t = gather_positions(x, mask), gather_positions(y, mask)
    assert float(original_cross_correlation_loss(s, t)) == pytest.approx(float(release_corr(x, y, attention_mask)),
                                                                         rel=1e-5)
    assert float(relative_l1_loss(s, t)) == pytest.approx(float(release_mse(x, y, attention_mask)), rel=1e-6)
    assert float(cosine_loss(s, t)) == pytest.approx(float(release_cos(x, y, attention_mask)), rel=1e-6)

    # The released script's feature term: --hidden, three layer pairs, --alpha-corr 0.05 (cos, mse 0), ÷ 3.
    layers = [(rand(3, 7, K, seed=10 + j), rand(3, 7, K, seed=20 + j)) for j in range(3)]
    want = sum(0.05 * release_corr(a, b, attention_mask) for a, b in layers) / 3
    got = feature_alignment_loss([(gather_positions(a, mask), gather_positions(b, mask)) for a, b in layers],
                                 alpha_corr=0.05, corr_variant="original", pair_divisor=3)
    assert float(got.total) == pytest.approx(float(want), rel=1e-5)


def test_constant_unit_is_finite_here_and_nan_in_the_original():
    t = rand(N, K, seed=1)
    s = rand(N, K, seed=2)
    s[:, 0] = 0.7  # a student unit that does not vary over the positions
    assert torch.isnan(original_cross_correlation_loss(s, t))
    for name in ("corr", "mse"):
        value = LOSSES[name](s, t)
        assert torch.isfinite(value)


# ------------------------------------------------------------------------------------------------------ reductions


@pytest.mark.parametrize("name", ["cos", "rel_l1", "mse_raw"])
def test_per_position_losses_split_exactly_over_micro_batches(name):
    fn = LOSSES[name]
    s, t = rand(N, K, seed=1), rand(N, K, seed=2)
    parts = [(s[:10], t[:10]), (s[10:], t[10:])]
    global_mean = sum(fn(a, b, reduction="sum") for a, b in parts) / sum(term_count(
        name.replace("_raw", ""), a.shape[0], standardise_columns=False) for a, _ in parts)
    assert float(global_mean) == pytest.approx(float(fn(s, t)), rel=1e-5)


@pytest.mark.parametrize("name", ["corr", "mse"])
def test_per_batch_losses_sum_is_n_times_the_batch_value_and_depends_on_the_split(name):
    fn = LOSSES[name]
    s, t = rand(N, K, seed=1), rand(N, K, seed=2) + rand(N, K, seed=1)
    assert float(fn(s, t, reduction="sum")) == pytest.approx(N * float(fn(s, t)), rel=1e-6)
    # The documented caveat: the count-weighted average over two micro-batches is not the whole batch's value.
    parts = [(s[:10], t[:10]), (s[10:], t[10:])]
    split = sum(fn(a, b, reduction="sum") for a, b in parts) / sum(term_count(name, a.shape[0]) for a, _ in parts)
    assert abs(float(split) - float(fn(s, t))) > 1e-3
    # Fewer than two rows carry no column statistics: 0, counted 0.
    assert float(fn(s[:1], t[:1], reduction="sum")) == 0.0 and term_count(name, 1) == 0.0


def test_empty_positions_give_a_zero_connected_to_the_student():
    s = torch.zeros(0, K, requires_grad=True)
    for fn in LOSSES.values():
        value = fn(s, torch.zeros(0, K), reduction="sum")
        assert value.item() == 0.0 and value.requires_grad
        value.backward()
    assert s.grad is not None


# ------------------------------------------------------------------------------------------------------ layer pairs


def test_layer_pairs_are_averaged_and_every_alpha_adds():
    pairs = [(rand(N, K, seed=1), rand(N, K, seed=2)), (rand(N, 4, seed=3), rand(N, 4, seed=4))]
    out = feature_alignment_loss(pairs, alpha_corr=0.05, alpha_cos=0.5, alpha_rel_l1=0.0, alpha_mse=2.0)
    assert sorted(out.terms) == ["corr", "cos", "mse"]
    for name, fn in (("corr", cross_correlation_loss), ("cos", cosine_loss), ("mse", mse_loss)):
        assert float(out.terms[name]) == pytest.approx(sum(float(fn(s, t)) for s, t in pairs) / 2, rel=1e-6)
    want = 0.05 * out.terms["corr"] + 0.5 * out.terms["cos"] + 2.0 * out.terms["mse"]
    assert float(out.total) == pytest.approx(float(want), rel=1e-6)
    # The original's literal ÷ 3, here with two pairs.
    three = feature_alignment_loss(pairs, alpha_cos=1.0, pair_divisor=3)
    assert float(three.total) == pytest.approx(float(out.terms["cos"]) * 2 / 3, rel=1e-6)
    summed = feature_alignment_loss(pairs, alpha_cos=1.0, reduction="sum")
    assert float(summed.total) == pytest.approx(N * float(out.terms["cos"]), rel=1e-5)
    original_weights = feature_alignment_loss(pairs, alpha_corr=1.0, corr_variant="original_weights")
    assert float(original_weights.total) == pytest.approx(
        sum(float(cross_correlation_loss(s, t, weighting="original")) for s, t in pairs) / 2, rel=1e-6)


def test_bad_inputs_are_refused_with_the_fix():
    s, t = rand(N, 6, seed=1), rand(N, K, seed=2)
    with pytest.raises(ValueError, match="make_projector"):
        cosine_loss(s, t)
    with pytest.raises(ValueError, match=r"must be \[N, k\]"):
        relative_l1_loss(s[None], t[None])
    with pytest.raises(ValueError, match="reduction='avg' is unknown"):
        mse_loss(t, t, reduction="avg")
    with pytest.raises(ValueError, match="weighting='reverse' is unknown"):
        cross_correlation_loss(t, t, weighting="reverse")
    with pytest.raises(ValueError, match="every alpha is 0"):
        feature_alignment_loss([(t, t)])
    with pytest.raises(ValueError, match="same position mask"):
        feature_alignment_loss([(t, t), (t[:5], t[:5])], alpha_cos=1.0)
    with pytest.raises(ValueError, match="alpha_cos=-1"):
        feature_alignment_loss([(t, t)], alpha_cos=-1.0)
