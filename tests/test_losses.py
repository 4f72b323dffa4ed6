"""Tests for distill/losses.py: every divergence against a direct float64 autograd implementation of its formula."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import (
    DIVERGENCES,
    KINDS,
    TOKEN_SCORES,
    count_selected,
    distillation_loss,
    select_tokens,
)

TAU, ALPHA, BETA = 1.7, 0.2, 0.7
B, T, V = 3, 7, 19
CHUNK = 4  # several chunks and a partial last one for the 3 * 7 positions


# ----------------------------------------------------------------------------------------------------------------
# Float64 reference: the formulas written out over full tensors, differentiated by autograd
# ----------------------------------------------------------------------------------------------------------------


def _base(kind: str) -> tuple[str, bool]:
    """(formula name, uses temperature) of a kind, resolved independently of the library's registry."""
    kind = {"kd": "fkl", "ttvdf": "ttvd"}.get(kind, kind)
    if kind in ("fkl", "rkl", "jsd", "tvd", "sfkl", "srkl"):
        return kind, False
    assert kind.startswith("t"), kind
    return kind[1:], True


def ref_per_position(kind: str, z: torch.Tensor, t: torch.Tensor, tau: float, alpha: float, beta: float):
    """Per-position divergence ``[B, T]`` in float64; slots that are -inf on either side are excluded."""
    base, tempered = _base(kind)
    tau = tau if tempered else 1.0
    ls, lt = torch.log_softmax(z.double() / tau, -1), torch.log_softmax(t.double() / tau, -1)
    invalid = torch.isneginf(ls) | torch.isneginf(lt)
    # Substitute 0 at excluded slots before any arithmetic so autograd never sees 0 * inf (double-where trick).
    ls, lt = torch.where(invalid, 0.0, ls), torch.where(invalid, 0.0, lt)
    ps, pt = ls.exp(), lt.exp()
    if base == "fkl":
        term = pt * (lt - ls)
    elif base == "rkl":
        term = ps * (ls - lt)
    elif base == "jsd":
        m = beta * ps + (1 - beta) * pt
        term = beta * ps * (ls - m.log()) + (1 - beta) * pt * (lt - m.log())
    elif base == "tvd":
        term = 0.5 * (pt - ps).abs()
    elif base == "sfkl":
        term = pt * (lt - (alpha * pt + (1 - alpha) * ps).log())
    elif base == "srkl":
        term = ps * (ls - ((1 - alpha) * pt + alpha * ps).log())
    else:
        raise AssertionError(base)
    return torch.where(invalid, 0.0, term).sum(-1) * tau * tau


def ref_scores(score: str, z, t, labels, tau: float) -> torch.Tensor:
    """Selection scores ``[B, T]`` in float64 at the given temperature."""
    ls, lt = torch.log_softmax(z.double() / tau, -1), torch.log_softmax(t.double() / tau, -1)

    def entropy(lp):
        return -torch.where(torch.isneginf(lp), 0.0, lp.exp() * lp).sum(-1)

    if score == "student_entropy":
        return entropy(ls)
    if score == "teacher_entropy":
        return entropy(lt)
    if score == "kl":
        return ref_per_position("fkl", z.double() / tau, t.double() / tau, 1.0, 0.0, 0.0)  # plain KL at tau
    if score == "ce_teacher":
        return -lt.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    raise AssertionError(score)


def ref_keep(scores: torch.Tensor, mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Per sequence, the ceil(r * n) masked positions with the highest score, ties to the earlier position."""
    keep = torch.zeros_like(mask)
    for b in range(mask.shape[0]):
        positions = [i for i in range(mask.shape[1]) if mask[b, i]]
        k = math.ceil(round(ratio * len(positions), 9))
        for i in sorted(positions, key=lambda i: (-float(scores[b, i]), i))[:k]:
            keep[b, i] = True
    return keep


def ref_loss(kind, z, t, keep, *, tau=TAU, alpha=ALPHA, beta=BETA, reduction="mean"):
    """Reduced reference loss and its gradient w.r.t. ``z`` (float64)."""
    z64 = z.detach().double().requires_grad_()
    per_position = ref_per_position(kind, z64, t, tau, alpha, beta)
    total = per_position[keep].sum()
    loss = total / keep.sum() if reduction == "mean" else total
    loss.backward()
    return loss.detach(), z64.grad


# ----------------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------------


def make_case(seed: int = 0, with_inf: bool = True, dtype=torch.float32, inf_in: str = "both"):
    """Random logits with -inf slots and a partial mask.

    ``inf_in="both"``: slots that are -inf in the student only, in the teacher only, in both, and one isolated slot;
    ``"student"`` / ``"teacher"``: -inf slots on that side only.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2.5
    t = torch.randn(B, T, V, generator=g, dtype=torch.float64) * 2.5
    if with_inf and inf_in == "both":
        z[:, :, 3] = -math.inf  # student-only padding slot everywhere
        t[:, :, 5] = -math.inf  # teacher-only padding slot everywhere
        z[:, :, V - 1] = t[:, :, V - 1] = -math.inf  # shared padding slot
        z[0, 2, 7] = -math.inf  # one isolated slot
    elif with_inf:
        side = z if inf_in == "student" else t
        side[:, :, 3] = -math.inf
        side[1, 4, 8] = -math.inf
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0, :4] = True
    mask[2] = False  # one sequence with nothing selected
    labels = torch.randint(0, V, (B, T), generator=g)
    return z.to(dtype), t.to(dtype), mask, labels


def run(kind, z, t, mask, **kw):
    """Library loss and gradient w.r.t. logits (fresh leaf)."""
    leaf = z.detach().clone().requires_grad_()
    loss = distillation_loss(kind, leaf, t, mask, temperature=kw.pop("temperature", TAU),
                             skew_alpha=kw.pop("skew_alpha", ALPHA), jsd_beta=kw.pop("jsd_beta", BETA),
                             chunk_size=kw.pop("chunk_size", CHUNK), **kw)
    loss.backward()
    return loss.detach(), leaf.grad


# ----------------------------------------------------------------------------------------------------------------
# Correctness against the reference
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_value_and_gradient_match_float64_reference(kind):
    z, t, mask, _ = make_case(seed=1)
    loss, grad = run(kind, z, t, mask)
    ref, ref_grad = ref_loss(kind, z, t, mask)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
    torch.testing.assert_close(grad, ref_grad.float(), rtol=1e-4, atol=2e-6)
    assert grad[~mask].abs().max() == 0  # unselected positions get no gradient


@pytest.mark.parametrize("inf_in", ["student", "teacher"])
def test_one_sided_padding(inf_in):
    z, t, mask, _ = make_case(seed=16, inf_in=inf_in)
    for kind in ("fkl", "trkl", "jsd", "tvd", "sfkl", "tsrkl"):
        loss, grad = run(kind, z, t, mask)
        ref, ref_grad = ref_loss(kind, z, t, mask)
        assert torch.isfinite(loss) and torch.isfinite(grad).all()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), kind
        torch.testing.assert_close(grad, ref_grad.float(), rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("kind", ["fkl", "rkl", "jsd", "sfkl", "srkl", "tvd"])
def test_other_hyperparameters_and_no_padding(kind):
    """alpha/beta at other values (including the 0 and 1 edges) and logits without any -inf slot."""
    z, t, mask, _ = make_case(seed=2, with_inf=False)
    for alpha, beta in ((0.0, 1.0), (0.5, 0.5), (1.0, 0.0), (0.05, 0.95)):
        loss, grad = run(kind, z, t, mask, skew_alpha=alpha, jsd_beta=beta)
        ref, ref_grad = ref_loss(kind, z, t, mask, alpha=alpha, beta=beta)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), (alpha, beta)
        torch.testing.assert_close(grad, ref_grad.float(), rtol=1e-4, atol=2e-6)


def test_value_without_gradient_uses_same_formula():
    """The value-only path (no grad needed) agrees with the reference for every kind."""
    z, t, mask, _ = make_case(seed=3)
    for kind in KINDS:
        with torch.no_grad():
            loss = distillation_loss(kind, z, t, mask, temperature=TAU, skew_alpha=ALPHA, jsd_beta=BETA,
                                     chunk_size=CHUNK)
        ref, _ = ref_loss(kind, z, t, mask)
        assert not loss.requires_grad
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6), kind


@pytest.mark.parametrize("score", TOKEN_SCORES)
@pytest.mark.parametrize("kind", ["fkl", "tsrkl", "jsd", "ttvd"])
def test_selective_tokens_match_reference(kind, score):
    z, t, mask, labels = make_case(seed=4)
    tau = TAU if DIVERGENCES[kind].uses_temperature else 1.0
    for ratio in (0.3, 0.5):
        loss, grad = run(kind, z, t, mask, token_ratio=ratio, token_score=score, labels=labels)
        keep = ref_keep(ref_scores(score, z, t, labels, tau), mask, ratio)
        assert keep.sum() < mask.sum()
        ref, ref_grad = ref_loss(kind, z, t, keep)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-5, abs=1e-6)
        torch.testing.assert_close(grad, ref_grad.float(), rtol=1e-4, atol=2e-6)
        assert int(count_selected(mask, ratio)) == int(keep.sum())


def test_token_ratio_one_is_dense_kd():
    z, t, mask, labels = make_case(seed=5)
    dense, dense_grad = run("fkl", z, t, mask)
    for score in TOKEN_SCORES:
        loss, grad = run("fkl", z, t, mask, token_ratio=1.0, token_score=score, labels=labels)
        assert torch.equal(loss, dense) and torch.equal(grad, dense_grad)


def test_selection_ties_go_to_earlier_position():
    scores = torch.tensor([[1.0, 2.0, 2.0, 0.5, 2.0, 2.0], [3.0, 3.0, 3.0, 3.0, 3.0, 3.0]])
    mask = torch.tensor([[True, False, True, True, True, True], [False, True, True, True, False, True]])
    keep = select_tokens(scores, mask, 0.5)  # n = 5 -> 3 kept, n = 4 -> 2 kept
    assert keep.tolist() == [
        [False, False, True, False, True, True],
        [False, True, True, False, False, False],
    ]
    # Identical positions in the logits give identical scores: the earliest of them must win.
    z = torch.randn(1, 1, V).expand(1, 6, V).clone()
    t = torch.randn(1, 6, V)
    loss, grad = run("fkl", z, t, torch.ones(1, 6, dtype=torch.bool), token_ratio=0.5)
    assert grad[0, :3].abs().sum(-1).gt(0).all() and grad[0, 3:].abs().max() == 0


def test_count_selected_and_ceiling():
    mask = torch.zeros(4, 30, dtype=torch.bool)
    mask[0, :25] = True  # 0.28 * 25 = 7.000000000000001 in floating point: must be 7
    mask[1, :1] = True  # at least one kept
    mask[2, :10] = True  # ceil(2.8) = 3
    assert count_selected(mask, 0.28).item() == 7 + 1 + 3 + 0
    assert int(select_tokens(torch.rand(4, 30), mask, 0.28).sum()) == 11
    assert count_selected(mask, 1.0).item() == int(mask.sum())
    assert count_selected(mask, 1.0).dtype == torch.int64


# ----------------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_zero_when_distributions_are_equal(kind):
    z, _, mask, _ = make_case(seed=6)
    loss, grad = run(kind, z, z.clone(), mask)
    assert abs(loss.item()) < 1e-6
    assert grad.abs().max() < 1e-6


def test_chunk_size_does_not_change_result():
    z, t, mask, labels = make_case(seed=7)
    for kind in ("tfkl", "jsd", "srkl", "ttvd"):
        small, small_grad = run(kind, z, t, mask, chunk_size=1, token_ratio=0.6, labels=labels)
        large, large_grad = run(kind, z, t, mask, chunk_size=1000, token_ratio=0.6, labels=labels)
        default, default_grad = run(kind, z, t, mask, chunk_size=None, token_ratio=0.6, labels=labels)
        torch.testing.assert_close(small, large, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(small_grad, large_grad, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(default_grad, large_grad, rtol=1e-6, atol=1e-8)


def test_plain_kinds_ignore_temperature_and_t_kinds_scale():
    z, t, mask, _ = make_case(seed=8)
    assert torch.equal(run("fkl", z, t, mask, temperature=1.0)[0], run("fkl", z, t, mask, temperature=4.0)[0])
    # At tau = 1 the temperature twin is the plain kind.
    assert torch.equal(run("tjsd", z, t, mask, temperature=1.0)[0], run("jsd", z, t, mask)[0])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    z, t, mask, _ = make_case(seed=9, dtype=dtype)
    for kind in ("fkl", "trkl", "jsd", "tvd", "tsfkl", "srkl"):
        loss, grad = run(kind, z, t, mask)
        ref, ref_grad = ref_loss(kind, z, t, mask)  # reference on the same rounded values
        assert grad.dtype == dtype and loss.dtype == torch.float32
        assert torch.isfinite(grad.float()).all()
        assert loss.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)
        torch.testing.assert_close(grad.float(), ref_grad.float(), rtol=2e-2, atol=1e-3)


def test_sum_reduction_is_mean_times_count():
    z, t, mask, labels = make_case(seed=10)
    for ratio in (1.0, 0.4):
        mean, mean_grad = run("tsfkl", z, t, mask, token_ratio=ratio, labels=labels)
        total, total_grad = run("tsfkl", z, t, mask, token_ratio=ratio, labels=labels, reduction="sum")
        count = count_selected(mask, ratio)
        torch.testing.assert_close(total, mean * count, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(total_grad, mean_grad * count, rtol=1e-5, atol=1e-7)


def test_nothing_selected_returns_connected_zero():
    z, t, _, _ = make_case(seed=11)  # contains -inf slots: a logits.sum() * 0 would be NaN
    leaf = z.clone().requires_grad_()
    loss = distillation_loss("rkl", leaf, t, torch.zeros(B, T, dtype=torch.bool))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert leaf.grad is not None and leaf.grad.abs().max() == 0
    assert distillation_loss("fkl", leaf, t, torch.zeros(B, T), reduction="sum").item() == 0.0


def test_backward_scaling_retained_graph_and_teacher_constant():
    z, t, mask, _ = make_case(seed=12)
    _, grad = run("tjsd", z, t, mask)
    leaf, teacher = z.clone().requires_grad_(), t.clone().requires_grad_()
    loss = distillation_loss("tjsd", leaf, teacher, mask, temperature=TAU, jsd_beta=BETA, chunk_size=CHUNK)
    (3.0 * loss).backward(retain_graph=True)
    torch.testing.assert_close(leaf.grad, 3.0 * grad)
    loss.backward()  # second backward through the retained graph rebuilds the gradient
    torch.testing.assert_close(leaf.grad, 4.0 * grad)
    assert teacher.grad is None


def test_non_contiguous_logits():
    z, t, mask, _ = make_case(seed=13)
    wide = torch.randn(B, T + 1, V)
    wide[:, :-1] = z
    leaf = wide.requires_grad_()
    loss = distillation_loss("srkl", leaf[:, :-1], t, mask, skew_alpha=ALPHA, chunk_size=CHUNK)
    loss.backward()
    ref, ref_grad = run("srkl", z, t, mask)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(leaf.grad[:, :-1], ref_grad)
    assert leaf.grad[:, -1].abs().max() == 0
    # Vocabulary cut (logits[..., :V] of a model with a padded embedding): rows with a stride larger than V.
    padded = torch.randn(B, T, V + 5)
    padded[..., :V] = z
    leaf = padded.requires_grad_()
    loss = distillation_loss("srkl", leaf[..., :V], t, mask, skew_alpha=ALPHA, chunk_size=CHUNK)
    loss.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(leaf.grad[..., :V], ref_grad)
    assert leaf.grad[..., V:].abs().max() == 0


# ----------------------------------------------------------------------------------------------------------------
# Registry and errors
# ----------------------------------------------------------------------------------------------------------------


def test_registry():
    expected = {"fkl", "kd", "rkl", "jsd", "tvd", "sfkl", "srkl",
                "tfkl", "trkl", "tjsd", "ttvd", "ttvdf", "tsfkl", "tsrkl"}
    assert set(KINDS) == expected == set(DIVERGENCES)
    assert DIVERGENCES["kd"] is DIVERGENCES["fkl"] and DIVERGENCES["ttvdf"] is DIVERGENCES["ttvd"]
    for kind in expected:
        assert DIVERGENCES[kind].uses_temperature == _base(kind)[1]


def test_shape_errors_name_both_shapes():
    z, t, mask, _ = make_case(seed=14)
    with pytest.raises(ValueError, match=r"\(3, 7, 19\).*\(3, 7, 20\).*vocabulary"):
        distillation_loss("fkl", z, torch.zeros(B, T, V + 1), mask)
    with pytest.raises(ValueError, match=r"\(3, 7, 19\).*\(3, 6, 19\)"):
        distillation_loss("fkl", z, t[:, :-1], mask)
    with pytest.raises(ValueError, match=r"mask \(3, 6\).*\(3, 7\)"):
        distillation_loss("fkl", z, t, mask[:, :-1])
    with pytest.raises(ValueError, match=r"labels \(3, 6\)"):
        distillation_loss("fkl", z, t, mask, labels=torch.zeros(B, T - 1, dtype=torch.long))


def test_bad_arguments_raise_clear_errors():
    z, t, mask, labels = make_case(seed=15)
    with pytest.raises(ValueError, match="valid kinds: fkl.*tsrkl"):
        distillation_loss("kl", z, t, mask)
    with pytest.raises(ValueError, match="ce_teacher.*labels"):
        distillation_loss("fkl", z, t, mask, token_ratio=0.5, token_score="ce_teacher")
    with pytest.raises(ValueError, match="token_score"):
        distillation_loss("fkl", z, t, mask, token_ratio=0.5, token_score="random")
    for ratio in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="token_ratio"):
            distillation_loss("fkl", z, t, mask, token_ratio=ratio)
    for tau in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            distillation_loss("tfkl", z, t, mask, temperature=tau)
    with pytest.raises(ValueError, match="skew_alpha"):
        distillation_loss("sfkl", z, t, mask, skew_alpha=1.5)
    with pytest.raises(ValueError, match="jsd_beta"):
        distillation_loss("jsd", z, t, mask, jsd_beta=-0.1)
    with pytest.raises(ValueError, match="reduction"):
        distillation_loss("fkl", z, t, mask, reduction="none")
    with pytest.raises(ValueError, match="chunk_size"):
        distillation_loss("fkl", z, t, mask, chunk_size=0)
    bad_labels = labels.clone()
    bad_labels[mask] = -100
    with pytest.raises(ValueError, match=r"labels at selected positions.*\[0, 19\)"):
        distillation_loss("fkl", z, t, mask, token_ratio=0.5, token_score="ce_teacher", labels=bad_labels)
