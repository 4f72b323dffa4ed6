"""Feature-alignment losses for selective feature distillation: student layer outputs against selected teacher units.

Selective feature KD ("Selective Knowledge Distillation of Large Language Models", released as a MiniLLM fork)
picks, per teacher layer, the ``k`` hidden units that matter most (attribution and top-k: distill/features.py) and
aligns a student layer's output with them. This module holds the losses only, as pure functions on tensors:

* ``position_mask`` / ``gather_positions``: the positions compared, and the ``[B, L, H]`` hidden states of one layer
  gathered there into ``[N, H]`` rows. Default ``"response"``: the loss positions ``labels != -100`` of the
  pre-shifted batches (the hidden state read at the last prompt token and at every response token, i.e. the states
  that predict the response); ``"nonpad"``: every position with ``attention_mask`` 1, prompt included, as the
  original compares them. The student and the teacher are gathered with the same mask, so row ``n`` of both is the
  same token.
* ``make_projector`` / ``project``: when the student's width differs from ``k``, a linear map (an ``nn.Module`` the
  objective owns and returns from ``modules()``) takes the gathered student rows ``[N, H_s]`` to ``[N, k]`` before the
  loss. Gathering first projects only the ``N`` compared rows; the result is the same as projecting every position.
* The losses, each ``f(student [N, k], teacher [N, k], *, reduction) -> scalar``, float32 math, the teacher detached
  inside (a teacher tensor that requires grad gets none):

  - ``cross_correlation_loss``: ``w_diag Σ_i (1 − C_ii)² + w_off Σ_{i≠j} C_ij²`` with ``C = S_stdᵀ T_std / N``
    (defaults 1 and 0.005). Per-batch (column statistics).
  - ``cosine_loss``: ``mean_n (1 − cos(s_n, t_n))`` on the raw features. Decomposable over positions.
  - ``relative_l1_loss``: ``mean_{n,i} |s − t| / (|s| + |t| + 1e-8)`` on the raw features, the original's "mse".
    Decomposable.
  - ``mse_loss``: ``mean_{n,i} (s_std − t_std)²``; per-batch. With ``standardise_columns=False`` on the raw
    features, decomposable.
  - ``original_cross_correlation_loss``: the release's ``compute_corr`` verbatim (below). Per-batch.

  ``reduction="sum"`` gives ``N ×`` the mean. For the decomposable losses that is the exact sum over positions of a
  per-position value, so the engine (sums divided by the step's global count of positions, ``term_count``) gets the
  same mean however a global batch is split into micro-batches and ranks. The correlation, and the MSE on
  standardised features, need column means and variances over all ``N`` positions at once: they are per-batch
  statistics. Their ``"sum"`` is ``N ×`` the micro-batch's value, so the engine averages the micro-batches' values
  weighted by their positions. That equals the value on the whole step's positions only when the step is one
  micro-batch on one rank; with gradient accumulation or several ranks, each part is standardised and correlated on
  its own (as in the original, which computed it per micro-batch and per rank), and both the value and its gradient
  depend on the split. An exact global version would all-reduce the column sums, sums of squares and cross products
  over the step before forming ``C``; not provided.

* ``feature_alignment_loss``: the weighted sum over layer pairs, ``Σ_term α_term · (Σ_pairs loss_term) / P`` with
  ``P`` the number of pairs, and the per-term pair averages for logging.

Standardisation (``standardise``): per column over the ``N`` rows, ``(x − mean) / sqrt(var + 1e-5)`` with the biased
variance, as ``BatchNorm1d(affine=False)`` does in Barlow Twins. The epsilon keeps a constant column finite (it
standardises to 0) but it is absolute: a column of variance ``v`` has ``C_ii = v / (v + 1e-5)`` even when the student
equals the teacher, so units of variance below ~1e-3 are under-weighted (their diagonal term cannot reach 0).

Differences from the original (Khsaadi/KD-LLMs ``minillm/trainer.py`` ``compute_corr``/``compute_mse``/``compute_cos``
and the feature branch of ``train``), each deliberate:

1. Correlation weighting. The original weights ``0.005·Σ(C_ii − 1)² + Σ_{i≠j} C_ij²``, the reverse of the
   redundancy-reduction weighting it comes from (Barlow Twins: diagonal 1, off-diagonal λ = 0.005; the original's
   commented-out line has it that way round). Default here: diagonal 1, off-diagonal 0.005; the original's
   ``weighting="original"`` (0.005 / 1) is an option.
2. Correlation scale. The original divides ``z1ᵀz2`` by ``masked_select(...).size(0)``, the number of *elements*
   ``N·k``, not of positions, so ``|C_ii| < 1/k``: the diagonal term is then ≈ ``0.005·k`` whatever the student does and
   the off-diagonal one is shrunk by ``1/k²``. Here ``C`` is divided by ``N``, so ``C_ii`` is a correlation in
   ``[-1, 1]`` and ``C_ii = 1`` when the student equals the teacher.
3. Standardisation. The original uses ``torch.std`` (unbiased) without an epsilon: a constant column (a unit that is
   the same at every position, or a single position) gives NaN. Here the biased variance plus 1e-5 (above).
   ``original_cross_correlation_loss`` reproduces 1–3 exactly, NaN included, for reproducing the release.
4. "mse". The original's ``compute_mse`` is ``mean |s − t| / (|s| + |t| + 1e-8)``, a relative L1 on raw features,
   bounded in ``[0, 1]`` per element and blind to scale. It is kept, bit for bit, as ``relative_l1_loss``
   (``alpha_rel_l1``); ``mse_loss`` is a true mean squared error, on standardised features by default (the
   original's commented-out ``F.mse_loss(z1_norm, z2_norm)``), so a few teacher units of outsized raw scale (LLM
   residual streams have such outlier units) do not dominate it. On standardised features it is tied to the correlation's
   diagonal: ``mean_i (v_s,i + v_t,i − 2 C_ii) ≈ 2·mean_i (1 − C_ii)``.
5. Positions. The original compares all non-pad positions (prompt included; its pad is GPT-2's EOS, so EOS tokens
   inside a sequence drop out too). Default here: the response positions, where the student is trained;
   ``positions="nonpad"`` (``attention_mask``) is the original's choice.
6. Terms add. In the original each ``if args.alpha_...`` *replaces* the layer's loss, so only the last non-zero
   alpha counts (cos over mse over corr), and the alphas multiply the losses only in the hidden-state branch. Here
   every non-zero alpha adds its weighted term. With one non-zero alpha, as in the released script (``--alpha-corr
   0.05``, the others 0), the two agree.
7. Layer average. The original divides the sum over layer pairs by a literal 3 (right for its three pairs
   ``[-1,-2,-3]`` only). Here by the number of pairs; ``pair_divisor=3`` restores the literal.
8. Empty inputs. No positions (and, for the correlations, fewer than two) contribute 0 (connected to the graph, zero
   gradient) and ``term_count`` counts 0 for them, instead of NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, nn

from data_utils.datasets import IGNORE_INDEX

__all__ = [
    "CORR_VARIANTS",
    "CORR_WEIGHTINGS",
    "COS_EPS",
    "FEATURE_LOSSES",
    "FeatureLoss",
    "FeatureLossSpec",
    "POSITIONS",
    "REDUCTIONS",
    "REL_L1_EPS",
    "STD_EPS",
    "cosine_loss",
    "cross_correlation",
    "cross_correlation_loss",
    "feature_alignment_loss",
    "gather_positions",
    "make_projector",
    "mse_loss",
    "original_cross_correlation_loss",
    "position_mask",
    "project",
    "relative_l1_loss",
    "standardise",
    "term_count",
]

# Added to the biased per-column variance before the square root: BatchNorm1d's default, which Barlow Twins uses.
STD_EPS = 1e-5
# F.cosine_similarity's default: the norms are clamped to it, so an all-zero row has cosine 0, not NaN.
COS_EPS = 1e-8
# The original's constant in |s - t| / (|s| + |t| + eps): 0 / 0 at s = t = 0 becomes 0.
REL_L1_EPS = 1e-8

REDUCTIONS: tuple[str, ...] = ("mean", "sum")
POSITIONS: tuple[str, ...] = ("response", "nonpad")
# (diagonal weight, off-diagonal weight) of the cross-correlation loss.
CORR_WEIGHTINGS: dict[str, tuple[float, float]] = {"barlow": (1.0, 0.005), "original": (0.005, 1.0)}
# feature_alignment_loss's choices for the correlation term: C over N with either weighting, or the release verbatim.
CORR_VARIANTS: tuple[str, ...] = ("barlow", "original_weights", "original")


# ----------------------------------------------------------------------------------------------------- positions


def position_mask(batch: Mapping[str, Tensor], positions: str = "response") -> Tensor:
    """``[B, L]`` bool mask of the positions whose features are compared.

    ``"response"``: ``labels != -100`` (the pre-shifted batches' loss positions: the last prompt token and every
    response token, whose hidden states predict the response). ``"nonpad"``: ``attention_mask == 1``, prompt included
    (the original's choice)."""
    if positions == "response":
        if "labels" not in batch:
            raise ValueError("positions='response' needs batch['labels'] (pre-shifted, -100 outside the response); "
                             "pass a training batch or use positions='nonpad'")
        return batch["labels"] != IGNORE_INDEX
    if positions == "nonpad":
        if "attention_mask" not in batch:
            raise ValueError("positions='nonpad' needs batch['attention_mask']; pass a training batch")
        return batch["attention_mask"].bool()
    raise ValueError(f"positions={positions!r} is unknown; use one of {', '.join(POSITIONS)}")


def gather_positions(hidden: Tensor, mask: Tensor) -> Tensor:
    """The rows of ``hidden`` [B, L, H] where ``mask`` [B, L] is true, as [N, H] in row-major order (batch row, then
    position), dtype and graph kept. Gather the student and the teacher with the same mask."""
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, L, H] hidden states of one layer; got shape {tuple(hidden.shape)}")
    if mask.dim() != 2 or tuple(mask.shape) != tuple(hidden.shape[:2]):
        raise ValueError(f"mask must be [B, L] = {tuple(hidden.shape[:2])} like hidden's first two dimensions; got "
                         f"shape {tuple(mask.shape)} (build it with position_mask(batch))")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be bool (True: compare this position); got {mask.dtype}: use mask.bool()")
    return hidden[mask.to(hidden.device)]


# ----------------------------------------------------------------------------------------------------- projector


def make_projector(student_width: int, k: int, *, bias: bool = True, seed: int = 0) -> Optional[nn.Linear]:
    """A linear map from the student's width to the ``k`` selected teacher units, or None when they are equal (the
    original's case: ``--student-hidd-size`` is the student's own width, so no projector exists there).

    Initialised as ``nn.Linear`` is (Kaiming-uniform weight, uniform bias), from its own generator seeded with
    ``seed``, so building it does not move the global RNG. The objective owns it (``Objective.modules()``), which makes
    the trainer optimise, save and restore it with the student. The bias matters only to the raw-feature losses
    (cosine, relative L1, raw MSE); the standardised ones remove it."""
    for name, value in (("student_width", student_width), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int (a feature width)")
    if student_width == k:
        return None
    generator = torch.Generator().manual_seed(seed)
    # skip_init: nn.Linear's constructor would draw its initial values from the global RNG.
    projector = nn.utils.skip_init(nn.Linear, student_width, k, bias=bias)
    with torch.no_grad():
        # nn.Linear.reset_parameters, drawn from the local generator.
        nn.init.kaiming_uniform_(projector.weight, a=math.sqrt(5), generator=generator)
        if projector.bias is not None:
            bound = 1.0 / math.sqrt(student_width)
            projector.bias.uniform_(-bound, bound, generator=generator)
    return projector


def project(student: Tensor, projector: Optional[nn.Module]) -> Tensor:
    """Gathered student features [N, H_s] mapped to [N, k] (unchanged when ``projector`` is None). The rows are cast
    to the projector's dtype (under bf16 training it is bf16 like the student); the losses compute in float32."""
    if projector is None:
        return student
    weight = next(projector.parameters(), None)
    return projector(student if weight is None else student.to(weight.dtype))


# ----------------------------------------------------------------------------------------------------- helpers


def _check_pair(student: Tensor, teacher: Tensor) -> None:
    for name, x in (("student", student), ("teacher", teacher)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} features must be a tensor [N, k]; got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"{name} features must be [N, k] (gather [B, L, H] hidden states with gather_positions); "
                             f"got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} features must be floating point; got {x.dtype}")
    if student.shape != teacher.shape:
        raise ValueError(f"student features {tuple(student.shape)} and teacher features {tuple(teacher.shape)} must "
                         "have the same shape [N, k]: gather both with the same mask, and map the student to k with "
                         "make_projector/project when its width differs")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is unknown; use one of {', '.join(REDUCTIONS)}")


def _pair32(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    # The teacher is a target: detached here so that no caller can push gradient into it by accident.
    return student.float(), teacher.detach().float()


def _zero(student: Tensor) -> Tensor:
    # A float32 zero that depends on the student, so backward works and gives it a zero gradient.
    return student.float().sum() * 0.0


def _reduce_positions(per_position: Tensor, reduction: str) -> Tensor:
    return per_position.sum() if reduction == "sum" else per_position.mean()


def standardise(x: Tensor, eps: float = STD_EPS) -> Tensor:
    """Columns of ``x`` [N, k] standardised over the N rows, float32: ``(x − mean) / sqrt(var + eps)``, biased
    variance (BatchNorm1d's convention). A constant column becomes 0."""
    if x.dim() != 2:
        raise ValueError(f"x must be [N, k]; got shape {tuple(x.shape)}")
    x = x.float()
    mean = x.mean(dim=0, keepdim=True)
    var = x.var(dim=0, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)


# ----------------------------------------------------------------------------------------------------- losses


def cross_correlation(student: Tensor, teacher: Tensor, eps: float = STD_EPS) -> Tensor:
    """``C = S_stdᵀ T_std / N`` [k, k], float32: ``C_ij`` the correlation of student unit i with selected teacher unit
    j over the N positions (teacher detached)."""
    _check_pair(student, teacher)
    s, t = _pair32(student, teacher)
    return standardise(s, eps).T @ standardise(t, eps) / s.shape[0]


def cross_correlation_loss(student: Tensor, teacher: Tensor, *, weighting: str = "barlow",
                           w_diag: Optional[float] = None, w_off: Optional[float] = None, eps: float = STD_EPS,
                           reduction: str = "mean") -> Tensor:
    """``w_diag Σ_i (1 − C_ii)² + w_off Σ_{i≠j} C_ij²`` with ``C = cross_correlation(student, teacher)``.

    Weights: ``weighting="barlow"`` (default) diagonal 1, off-diagonal 0.005, the redundancy-reduction weighting of
    Barlow Twins; ``"original"`` the release's 0.005 / 1; ``w_diag``/``w_off`` override either. Summed over the k
    units (not averaged), as both do.

    ``student = teacher`` zeroes the diagonal part (up to the epsilon, see the module docstring) but not the
    off-diagonal one, which is then ``w_off Σ_{i≠j} R_ij²`` for the teacher columns' own correlation matrix ``R``:
    the loss is 0 there only if the selected teacher units are uncorrelated, and with ``N − 1 < k`` positions they
    cannot be (``Σ_{i≠j} R_ij² ≥ k²/(N − 1) − k``).

    A per-batch statistic (column statistics over all N rows): ``"mean"`` is the value on these rows, ``"sum"`` is
    ``N ×`` it, for the engine's sums-over-counts with ``term_count("corr", N)``; fewer than 2 rows give 0."""
    _check_pair(student, teacher)
    _check_reduction(reduction)
    if weighting not in CORR_WEIGHTINGS:
        raise ValueError(f"weighting={weighting!r} is unknown; use one of {', '.join(CORR_WEIGHTINGS)}")
    d, o = CORR_WEIGHTINGS[weighting]
    d = d if w_diag is None else float(w_diag)
    o = o if w_off is None else float(w_off)
    n = student.shape[0]
    if n < 2:  # one row has no spread: nothing to correlate
        return _zero(student)
    c = cross_correlation(student, teacher, eps)
    diag = torch.diagonal(c)
    on = (1.0 - diag).pow(2).sum()
    # Σ_{i≠j} C_ij² = ||C||_F² − Σ_i C_ii² (no k×k mask needed).
    off = c.pow(2).sum() - diag.pow(2).sum()
    loss = d * on + o * off
    return loss * n if reduction == "sum" else loss


def original_cross_correlation_loss(student: Tensor, teacher: Tensor, *, reduction: str = "mean") -> Tensor:
    """The release's ``compute_corr`` on gathered rows, defects kept, for reproducing it: columns standardised with
    the unbiased ``torch.std`` and no epsilon (a constant column or a single row gives NaN), ``C`` divided by the
    number of elements ``N·k`` instead of ``N``, and ``0.005 Σ_i (C_ii − 1)² + Σ_{i≠j} C_ij²``. ``"sum"``: ``N ×``."""
    _check_pair(student, teacher)
    _check_reduction(reduction)
    s, t = _pair32(student, teacher)
    n = s.shape[0]
    if n == 0:
        return _zero(student)
    z1 = (s - s.mean(dim=0)) / s.std(dim=0)
    z2 = (t - t.mean(dim=0)) / t.std(dim=0)
    c = z1.T @ z2 / s.numel()
    diag = torch.diagonal(c)
    on = (diag - 1.0).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    loss = 0.005 * on + off
    return loss * n if reduction == "sum" else loss


def cosine_loss(student: Tensor, teacher: Tensor, *, eps: float = COS_EPS, reduction: str = "mean") -> Tensor:
    """``1 − cos(s_n, t_n)`` per position on the raw features, averaged (``"mean"``) or summed (``"sum"``) over the N
    positions: the original's ``compute_cos``. Exactly decomposable over positions. Invariant to each row's scale,
    not to a per-column offset."""
    _check_pair(student, teacher)
    _check_reduction(reduction)
    if student.shape[0] == 0:
        return _zero(student)
    s, t = _pair32(student, teacher)
    return _reduce_positions(1.0 - torch.nn.functional.cosine_similarity(s, t, dim=-1, eps=eps), reduction)


def relative_l1_loss(student: Tensor, teacher: Tensor, *, eps: float = REL_L1_EPS, reduction: str = "mean") -> Tensor:
    """``|s − t| / (|s| + |t| + eps)`` per element on the raw features, averaged over the k units per position, then
    averaged (``"mean"``: the mean over all N·k elements, the original's ``compute_mse`` exactly) or summed over
    positions. Exactly decomposable over positions. Each element lies in [0, 1] (1 when the signs differ or one side
    is 0), whatever the features' scale."""
    _check_pair(student, teacher)
    _check_reduction(reduction)
    if student.shape[0] == 0:
        return _zero(student)
    s, t = _pair32(student, teacher)
    per_position = ((s - t).abs() / (s.abs() + t.abs() + eps)).mean(dim=-1)
    return _reduce_positions(per_position, reduction)


def mse_loss(student: Tensor, teacher: Tensor, *, standardise_columns: bool = True, eps: float = STD_EPS,
             reduction: str = "mean") -> Tensor:
    """Mean squared error, ``(s − t)²`` averaged over the k units per position, then averaged (``"mean"``: equal to
    ``F.mse_loss``) or summed over positions.

    ``standardise_columns=True`` (default): on standardised columns (``standardise``), so the loss is invariant to a
    per-unit scale and offset and the teacher's outlier units do not dominate; a per-batch statistic like the
    correlation (``term_count("mse", N)`` gives 0 below 2 rows). ``False``: on the raw features, exactly decomposable
    over positions."""
    _check_pair(student, teacher)
    _check_reduction(reduction)
    n = student.shape[0]
    if n == 0 or (standardise_columns and n < 2):
        return _zero(student)
    s, t = _pair32(student, teacher)
    if standardise_columns:
        s, t = standardise(s, eps), standardise(t, eps)
    return _reduce_positions((s - t).pow(2).mean(dim=-1), reduction)


# ----------------------------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class FeatureLossSpec:
    """One loss term: its function ``(student, teacher, reduction=...) -> scalar``, whether its ``"sum"`` is an exact
    sum of per-position values (else a per-batch statistic times N), and the fewest rows it needs (fewer: 0)."""

    fn: Callable[..., Tensor]
    decomposable: bool
    min_rows: int


FEATURE_LOSSES: dict[str, FeatureLossSpec] = {
    "corr": FeatureLossSpec(cross_correlation_loss, decomposable=False, min_rows=2),
    "cos": FeatureLossSpec(cosine_loss, decomposable=True, min_rows=1),
    "rel_l1": FeatureLossSpec(relative_l1_loss, decomposable=True, min_rows=1),
    "mse": FeatureLossSpec(mse_loss, decomposable=False, min_rows=2),
}


def term_count(term: str, n_positions: int, *, standardise_columns: bool = True) -> float:
    """The count the engine divides a term's ``"sum"`` by (``Objective.counts``): the number of compared positions,
    or 0 when there are too few for the term (its sum is then 0 as well). ``standardise_columns=False`` makes ``mse``
    the raw, per-position one."""
    if term not in FEATURE_LOSSES:
        raise ValueError(f"term={term!r} is unknown; use one of {', '.join(FEATURE_LOSSES)}")
    min_rows = 1 if term == "mse" and not standardise_columns else FEATURE_LOSSES[term].min_rows
    return float(n_positions) if n_positions >= min_rows else 0.0


# ----------------------------------------------------------------------------------------------------- layer pairs


@dataclass
class FeatureLoss:
    """``total``: ``Σ_term α_term · terms[term]``; ``terms``: each active term (non-zero alpha) averaged over the
    layer pairs, unweighted, in the requested reduction (for logging, or as separate engine terms)."""

    total: Tensor
    terms: dict[str, Tensor]


def feature_alignment_loss(pairs: Sequence[tuple[Tensor, Tensor]], *, alpha_corr: float = 0.0,
                           alpha_cos: float = 0.0, alpha_rel_l1: float = 0.0, alpha_mse: float = 0.0,
                           corr_variant: str = "barlow", standardise_mse: bool = True,
                           pair_divisor: Optional[float] = None, reduction: str = "mean") -> FeatureLoss:
    """The feature loss over layer pairs: ``pairs`` is a sequence of ``(student [N, k_p], teacher [N, k_p])``, the
    student already projected, all gathered at the same N positions; ``k_p`` may differ between pairs.

    ``terms[t] = Σ_p loss_t(pair p) / P`` with ``P = pair_divisor`` or, by default, the number of pairs (the original
    divides by a literal 3); ``total = Σ_t α_t · terms[t]`` over the terms with a non-zero alpha (every one adds; in
    the original the last non-zero alpha replaced the others). ``corr_variant``: ``"barlow"`` (C over N, weights
    1 / 0.005), ``"original_weights"`` (C over N, 0.005 / 1) or ``"original"`` (``original_cross_correlation_loss``).
    ``reduction="sum"`` gives ``N ×`` the mean of every term, for the engine (counts: ``term_count``)."""
    _check_reduction(reduction)
    if corr_variant not in CORR_VARIANTS:
        raise ValueError(f"corr_variant={corr_variant!r} is unknown; use one of {', '.join(CORR_VARIANTS)}")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty; give at least one (student features, teacher features) layer pair")
    n = pairs[0][0].shape[0] if isinstance(pairs[0][0], Tensor) and pairs[0][0].dim() == 2 else None
    for p, (s, t) in enumerate(pairs):
        _check_pair(s, t)
        if s.shape[0] != n:
            raise ValueError(f"layer pair {p} has {s.shape[0]} rows, pair 0 has {n}: gather every layer with the same "
                             "position mask")
    divisor = float(len(pairs)) if pair_divisor is None else float(pair_divisor)
    if not divisor > 0:
        raise ValueError(f"pair_divisor={pair_divisor!r} must be positive (None: the number of layer pairs)")
    alphas = {"corr": alpha_corr, "cos": alpha_cos, "rel_l1": alpha_rel_l1, "mse": alpha_mse}
    for name, a in alphas.items():
        if not math.isfinite(float(a)) or float(a) < 0:
            raise ValueError(f"alpha_{name}={a!r} must be a finite number >= 0 (0 switches the term off)")
    if all(float(a) == 0 for a in alphas.values()):
        raise ValueError("every alpha is 0: set at least one of alpha_corr, alpha_cos, alpha_rel_l1, alpha_mse")

    def one(name: str, s: Tensor, t: Tensor) -> Tensor:
        if name == "corr":
            if corr_variant == "original":
                return original_cross_correlation_loss(s, t, reduction=reduction)
            weighting = "barlow" if corr_variant == "barlow" else "original"
            return cross_correlation_loss(s, t, weighting=weighting, reduction=reduction)
        if name == "mse":
            return mse_loss(s, t, standardise_columns=standardise_mse, reduction=reduction)
        return FEATURE_LOSSES[name].fn(s, t, reduction=reduction)

    terms: dict[str, Tensor] = {}
    total: Optional[Tensor] = None
    for name, a in alphas.items():
        if float(a) == 0:
            continue
        value = sum((one(name, s, t) for s, t in pairs), start=torch.zeros((), device=pairs[0][0].device)) / divisor
        terms[name] = value
        total = float(a) * value if total is None else total + float(a) * value
    assert total is not None
    return FeatureLoss(total=total, terms=terms)
