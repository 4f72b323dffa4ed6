"""Token-level divergences between student and teacher next-token distributions.

`distillation_loss` is the single entry point used by the trainer. It compares, at every selected response
position, ``p_s = softmax(logits / tau)`` with ``p_t = softmax(teacher_logits / tau)`` and reduces a per-position
divergence over the selected positions.

Design (derivations in docs/losses.md):

* Registry, not string matching: `DIVERGENCES` maps every kind and alias to a `DivergenceSpec` holding two small pure
  functions on a `Chunk` of ``N`` positions (log-probabilities and probabilities ``[N, V]``) -- the per-position value
  ``[N]`` and the fused (value, analytic gradient w.r.t. the tempered student logits) -- and whether the kind uses
  the temperature.
* Memory: only the selected positions are touched, gathered ``chunk`` rows at a time. A custom autograd function
  computes the gradient w.r.t. the student logits chunk by chunk during the forward pass and stores it in the logits
  dtype, so no full-vocabulary float32 temporary over all positions ever exists; only ``chunk x V`` ones do.
* Padding slots (``-inf`` logits, on either side) are excluded from every sum, which keeps value and gradient finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
from torch import Tensor

from distill.kinds import ALIASES, BASE_KINDS, KINDS, TOKEN_SCORES

__all__ = [
    "DIVERGENCES",
    "KINDS",
    "REDUCTIONS",
    "TOKEN_SCORES",
    "Chunk",
    "DivergenceSpec",
    "Hyper",
    "count_selected",
    "default_chunk_rows",
    "distillation_loss",
    "select_tokens",
    "token_scores",
]

# Smallest normal float32: mixture probabilities are clamped to it before the log so that a slot where both
# distributions underflow to 0 gives 0 * finite = 0 instead of 0 * -inf = NaN. Such slots carry < 1e-38 mass.
_TINY = torch.finfo(torch.float32).tiny

# Elements of one float32 chunk temporary. On CPU 1 MiB: a chunk's handful of temporaries then stays in the caches,
# which makes the many cheap element-wise passes nearly free, and is negligible next to the one gradient buffer, while
# the per-chunk Python overhead stays small. Accelerators have no such cache to fit but pay a launch per op, so they
# get 32 MiB chunks (still small next to a [B, T, V] buffer of a training batch).
_CPU_CHUNK_ELEMENTS = 1 << 18
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 23

REDUCTIONS: tuple[str, ...] = ("mean", "sum")


class Hyper(NamedTuple):
    """Hyper-parameters of the skewed and Jensen-Shannon divergences."""

    skew_alpha: float
    jsd_beta: float


class Chunk(NamedTuple):
    """The two tempered float32 distributions at ``N`` positions.

    ``ls, lt``: student / teacher log-probabilities ``[N, V]``; ``ps, pt``: their probabilities ``[N, V]``;
    ``invalid``: ``[N, V] bool``, slots that are -inf on either side (excluded from every sum), or None if there are
    none (the fast path). Divergence functions must treat a chunk as read-only.
    """

    ls: Tensor
    lt: Tensor
    ps: Tensor
    pt: Tensor
    invalid: Tensor | None


ValueFn = Callable[[Chunk, Hyper], Tensor]
ValueGradFn = Callable[[Chunk, Hyper], "tuple[Tensor, Tensor]"]


@dataclass(frozen=True)
class DivergenceSpec:
    """One registered divergence.

    Attributes:
        name: canonical kind name (aliases map to the spec of their canonical name).
        value: ``(chunk, hyper) -> [N]`` per-position divergence.
        value_and_grad: ``(chunk, hyper) -> ([N], [N, V])``: the value and its gradient w.r.t. the tempered student
            logits ``u = z_s / tau`` (derived analytically; the caller applies the chain rule and the scaling).
        uses_temperature: True for the ``t*`` kinds, which divide both logits by tau and scale by tau**2.
        formula: human-readable definition.
    """

    name: str
    value: ValueFn
    value_and_grad: ValueGradFn
    uses_temperature: bool
    formula: str


# ----------------------------------------------------------------------------------------------------------------
# Chunk helpers
# ----------------------------------------------------------------------------------------------------------------


def _zero_invalid_(x: Tensor, invalid: Tensor | None) -> Tensor:
    """Zero ``x [N, V]`` in place at excluded slots (this also clears the NaN of 0 * -inf there)."""
    return x if invalid is None else x.masked_fill_(invalid, 0.0)


def _softmax_backward_(g: Tensor, ps: Tensor) -> Tensor:
    """Turn ``g = dD/d(log p_s)`` into ``dD/du`` for ``log p_s = log_softmax(u)``, in place on ``g``.

    ``d log p_s,k / d u_j = [k == j] - p_s,j``, hence ``dD/du_j = g_j - p_s,j * sum_k g_k``. Shapes ``[N, V]``.
    """
    return g.addcmul_(ps, g.sum(dim=-1, keepdim=True), value=-1.0)


def _mixture(p_a: Tensor, weight_a: float, p_b: Tensor) -> Tensor:
    """``weight_a * p_a + (1 - weight_a) * p_b`` for ``[N, V]`` probabilities, clamped below at `_TINY` (new tensor)."""
    return torch.mul(p_a, weight_a).add_(p_b, alpha=1.0 - weight_a).clamp_min_(_TINY)


# ----------------------------------------------------------------------------------------------------------------
# The divergences: for each kind, the value and the fused (value, gradient). Every divergence is a sum over slots of a
# term that depends only on (ps_k, pt_k), so with g_k = d term_k / d ls_k the gradient is dD/du = g - ps * sum(g)
# (`_softmax_backward_`). Excluded slots contribute neither value nor g. In-place ops only ever touch temporaries.
# ----------------------------------------------------------------------------------------------------------------


def fkl(c: Chunk, hyper: Hyper) -> Tensor:
    """Forward KL(p_t || p_s) = sum pt (lt - ls). ``[N, V] -> [N]``."""
    return _zero_invalid_((c.lt - c.ls).mul_(c.pt), c.invalid).sum(dim=-1)


def fkl_value_and_grad(c: Chunk, hyper: Hyper) -> tuple[Tensor, Tensor]:
    """KL(p_t || p_s) and its u-gradient: term = pt (lt - ls), g = -pt, so dD/du = ps * sum(pt) - pt."""
    work = _zero_invalid_((c.lt - c.ls).mul_(c.pt), c.invalid)
    value = work.sum(dim=-1)
    g = _zero_invalid_(torch.neg(c.pt, out=work), c.invalid)  # reuse the buffer: the term is no longer needed
    return value, _softmax_backward_(g, c.ps)


def rkl(c: Chunk, hyper: Hyper) -> Tensor:
    """Reverse KL(p_s || p_t) = sum ps (ls - lt). ``[N, V] -> [N]``."""
    return _zero_invalid_((c.ls - c.lt).mul_(c.ps), c.invalid).sum(dim=-1)


def rkl_value_and_grad(c: Chunk, hyper: Hyper) -> tuple[Tensor, Tensor]:
    """KL(p_s || p_t) and its u-gradient: term = ps (ls - lt), g = ps (ls - lt + 1)."""
    term = _zero_invalid_((c.ls - c.lt).mul_(c.ps), c.invalid)
    value = term.sum(dim=-1)
    g = _zero_invalid_(term.add_(c.ps), c.invalid)
    return value, _softmax_backward_(g, c.ps)


def jsd(c: Chunk, hyper: Hyper) -> Tensor:
    """beta KL(p_s || m) + (1 - beta) KL(p_t || m), m = beta ps + (1 - beta) pt. ``[N, V] -> [N]``."""
    return jsd_value_and_grad(c, hyper, need_grad=False)[0]


def jsd_value_and_grad(c: Chunk, hyper: Hyper, need_grad: bool = True) -> tuple[Tensor, Tensor]:
    """Generalised JSD and its u-gradient.

    term = beta ps ls + (1 - beta) pt lt - m log m, so d term / d ls = beta ps (ls - lm): g = beta ps (ls - lm).
    """
    beta = hyper.jsd_beta
    lm = _mixture(c.ps, beta, c.pt).log_()
    student = _zero_invalid_((c.ls - lm).mul_(c.ps), c.invalid)  # ps (ls - lm)
    teacher = _zero_invalid_(lm.neg_().add_(c.lt).mul_(c.pt), c.invalid)  # pt (lt - lm), in lm's buffer
    value = student.sum(dim=-1).mul_(beta).add_(teacher.sum(dim=-1), alpha=1.0 - beta)
    if not need_grad:
        return value, student
    return value, _softmax_backward_(student.mul_(beta), c.ps)


def tvd(c: Chunk, hyper: Hyper) -> Tensor:
    """Total variation 1/2 sum |pt - ps|. ``[N, V] -> [N]``."""
    diff = _zero_invalid_(c.ps - c.pt, c.invalid)
    return torch.linalg.vector_norm(diff, ord=1, dim=-1).mul_(0.5)


def tvd_value_and_grad(c: Chunk, hyper: Hyper) -> tuple[Tensor, Tensor]:
    """Total variation and its u-gradient: term = |ps - pt| / 2, g = sign(ps - pt) ps / 2 (sign(0) = 0)."""
    diff = _zero_invalid_(c.ps - c.pt, c.invalid)
    value = torch.linalg.vector_norm(diff, ord=1, dim=-1).mul_(0.5)
    g = diff.sign_().mul_(c.ps).mul_(0.5)
    return value, _softmax_backward_(g, c.ps)


def sfkl(c: Chunk, hyper: Hyper) -> Tensor:
    """Skew forward KL(p_t || alpha pt + (1 - alpha) ps). ``[N, V] -> [N]``."""
    lm = _mixture(c.pt, hyper.skew_alpha, c.ps).log_()
    return _zero_invalid_(lm.neg_().add_(c.lt).mul_(c.pt), c.invalid).sum(dim=-1)


def sfkl_value_and_grad(c: Chunk, hyper: Hyper) -> tuple[Tensor, Tensor]:
    """Skew forward KL and its u-gradient: term = pt (lt - lm), g = -(1 - alpha) pt ps / m."""
    alpha = hyper.skew_alpha
    m = _mixture(c.pt, alpha, c.ps)
    ratio = c.ps / m  # m >= (1 - alpha) ps, so the ratio is bounded by 1 / (1 - alpha)
    lm = m.log_()
    value = _zero_invalid_(lm.neg_().add_(c.lt).mul_(c.pt), c.invalid).sum(dim=-1)
    g = _zero_invalid_(ratio.mul_(c.pt).mul_(alpha - 1.0), c.invalid)
    return value, _softmax_backward_(g, c.ps)


def srkl(c: Chunk, hyper: Hyper) -> Tensor:
    """Skew reverse KL(p_s || (1 - alpha) pt + alpha ps). ``[N, V] -> [N]``."""
    lm = _mixture(c.ps, hyper.skew_alpha, c.pt).log_()
    return _zero_invalid_(lm.neg_().add_(c.ls).mul_(c.ps), c.invalid).sum(dim=-1)


def srkl_value_and_grad(c: Chunk, hyper: Hyper) -> tuple[Tensor, Tensor]:
    """Skew reverse KL and its u-gradient: term = ps (ls - lm), g = ps (ls - lm) + ps (1 - alpha ps / m)."""
    alpha = hyper.skew_alpha
    m = _mixture(c.ps, alpha, c.pt)
    ratio = c.ps / m  # m >= alpha ps, so alpha * ratio <= 1
    kl = _zero_invalid_(m.log_().neg_().add_(c.ls).mul_(c.ps), c.invalid)  # ps (ls - lm), in m's buffer
    value = kl.sum(dim=-1)
    g = _zero_invalid_(kl.add_(ratio.mul_(-alpha).add_(1.0).mul_(c.ps)), c.invalid)
    return value, _softmax_backward_(g, c.ps)


_BASE_KINDS: tuple[tuple[str, ValueFn, ValueGradFn, str], ...] = (
    ("fkl", fkl, fkl_value_and_grad, "KL(p_t || p_s)"),
    ("rkl", rkl, rkl_value_and_grad, "KL(p_s || p_t)"),
    ("jsd", jsd, jsd_value_and_grad, "b KL(p_s || m) + (1-b) KL(p_t || m), m = b p_s + (1-b) p_t"),
    ("tvd", tvd, tvd_value_and_grad, "1/2 sum |p_t - p_s|"),
    ("sfkl", sfkl, sfkl_value_and_grad, "KL(p_t || a p_t + (1-a) p_s)"),
    ("srkl", srkl, srkl_value_and_grad, "KL(p_s || (1-a) p_t + a p_s)"),
)


def _build_registry() -> dict[str, DivergenceSpec]:
    """Plain kinds (tau = 1), their ``t``-prefixed temperature twins, then the aliases."""
    registry: dict[str, DivergenceSpec] = {}
    for name, value, value_and_grad, formula in _BASE_KINDS:
        registry[name] = DivergenceSpec(name, value, value_and_grad, False, formula)
        registry["t" + name] = DivergenceSpec("t" + name, value, value_and_grad, True, f"tau^2 * {formula} at tau")
    for alias, target in ALIASES.items():
        registry[alias] = registry[target]
    return registry


DIVERGENCES: dict[str, DivergenceSpec] = _build_registry()
if tuple(DIVERGENCES) != KINDS or tuple(b[0] for b in _BASE_KINDS) != BASE_KINDS:  # the names live in distill/kinds.py
    raise AssertionError(f"distill/kinds.py lists {KINDS}, the registry holds {tuple(DIVERGENCES)}")


# ----------------------------------------------------------------------------------------------------------------
# Gathering chunks of selected positions
# ----------------------------------------------------------------------------------------------------------------


def default_chunk_rows(vocab_size: int, device_type: str = "cpu") -> int:
    """Positions per chunk so that one float32 ``[rows, V]`` temporary is about 1 MiB on CPU, 32 MiB elsewhere."""
    budget = _CPU_CHUNK_ELEMENTS if device_type == "cpu" else _ACCELERATOR_CHUNK_ELEMENTS
    return max(1, budget // max(1, vocab_size))


class _Rows:
    """Reads rows ``[n, V]`` (fresh copies) of a ``[B, T, V]`` tensor at flat positions ``b * T + t``.

    A ``[B*T, V]`` view with `index_select` copies contiguous rows several times faster than advanced indexing; a
    tensor whose first two dims cannot be merged (e.g. ``logits[:, :-1]``) falls back to advanced indexing.
    """

    def __init__(self, x: Tensor) -> None:
        self.x, self.seq = x, x.shape[1]
        try:
            self.flat: Tensor | None = x.view(-1, x.shape[-1])
        except RuntimeError:
            self.flat = None

    def read(self, rows: Tensor) -> Tensor:
        if self.flat is not None:
            return self.flat.index_select(0, rows)
        return self.x[rows // self.seq, rows % self.seq]


def _distribution(rows: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """Tempered float32 log-probs and probs of logits rows ``[n, V]`` (consumed: may be overwritten).

    One exp serves both outputs: with ``e = exp(z - max)``, ``p = e / sum(e)`` and ``log p = z - max - log sum(e)``,
    the same arithmetic as log_softmax, instead of log_softmax followed by another exp.
    """
    z = rows.float() if rows.dtype != torch.float32 else rows
    if tau != 1.0:
        z.div_(tau)
    z.sub_(z.amax(dim=-1, keepdim=True))
    p = z.exp()
    total = p.sum(dim=-1, keepdim=True)
    p.div_(total)
    return z.sub_(total.log_()), p


def _invalid_slots(ls: Tensor, lt: Tensor) -> Tensor | None:
    """``[N, V] bool`` of slots that are -inf on either side, or None when there are none (the common fast path).

    Only on CPU is it worth looking first: there the check is a cheap reduction, while on an accelerator reading the
    answer back would stall the stream on every chunk, so the mask is always built there (same result).
    """
    if ls.device.type == "cpu":
        neg_inf = float("-inf")
        if not (bool(ls.amin() == neg_inf) or bool(lt.amin() == neg_inf)):
            return None
    return torch.isneginf(ls) | torch.isneginf(lt)


def _make_chunk(student: _Rows, teacher: _Rows, rows: Tensor, tau: float) -> Chunk:
    ls, ps = _distribution(student.read(rows), tau)
    lt, pt = _distribution(teacher.read(rows), tau)
    return Chunk(ls, lt, ps, pt, _invalid_slots(ls, lt))


def _chunked_divergence(
    logits: Tensor,
    teacher: Tensor,
    rows: Tensor,
    spec: DivergenceSpec,
    hyper: Hyper,
    tau: float,
    weight: float,
    chunk: int,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None]:
    """Reduce the divergence over the K flat positions ``rows [K]`` (``b * T + t``), ``chunk`` rows at a time.

    Returns ``weight * tau_scale * sum_k D_k`` (float32 scalar) and, if ``need_grad``, its gradient w.r.t. ``logits``
    (``[B, T, V]``, contiguous, in the logits dtype, zero at unselected positions), else None.
    """
    scale = tau * tau if spec.uses_temperature else 1.0
    # Chain rule through u = z / tau: the u-gradient is divided by tau (tau = 1 for the plain kinds).
    grad_scale = scale * weight / tau
    student_rows, teacher_rows = _Rows(logits), _Rows(teacher)
    count, vocab = rows.numel(), logits.shape[-1]
    per_position = torch.empty(count, dtype=torch.float32, device=logits.device)
    grad = None
    if need_grad:
        # Only unselected rows need zeros; selected rows are fully written below (saves a pass over the buffer).
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        unselected = torch.ones(grad.shape[0] * grad.shape[1], dtype=torch.bool, device=grad.device)
        unselected[rows] = False
        grad.view(-1, vocab).index_fill_(0, unselected.nonzero().squeeze(1), 0.0)
    for start in range(0, count, chunk):
        part = slice(start, start + chunk)
        c = _make_chunk(student_rows, teacher_rows, rows[part], tau)
        if grad is None:
            per_position[part] = spec.value(c, hyper)
        else:
            value, g = spec.value_and_grad(c, hyper)
            per_position[part] = value
            grad.view(-1, vocab).index_copy_(0, rows[part], g.mul_(grad_scale).to(grad.dtype))
    # torch.sum reduces pairwise, so the float32 total stays accurate for many positions.
    return per_position.sum() * (scale * weight), grad


class _ChunkedDivergence(torch.autograd.Function):
    """Autograd wrapper: the gradient is computed during forward and handed out (not copied) in backward."""

    @staticmethod
    def forward(ctx, logits, teacher, rows, spec, hyper, tau, weight, chunk, need_grad):  # type: ignore[override]
        loss, grad = _chunked_divergence(logits, teacher, rows, spec, hyper, tau, weight, chunk, need_grad)
        ctx.grad = grad
        ctx.args = (spec, hyper, tau, weight, chunk)
        if need_grad:
            # Inputs only (no new memory); used solely to rebuild the gradient for a second backward.
            ctx.save_for_backward(logits, teacher, rows)
        return loss

    @staticmethod
    def backward(ctx, grad_output):  # type: ignore[override]
        grad, ctx.grad = ctx.grad, None  # drop ctx's reference so autograd can take the buffer without a copy
        if grad is None:
            # A second backward through a retained graph: the first one handed the buffer out, so rebuild it.
            logits, teacher, rows = ctx.saved_tensors
            _, grad = _chunked_divergence(logits, teacher, rows, *ctx.args, need_grad=True)
        # The common loss.backward() passes exactly 1: skip a full pass over the buffer then (the check is free on CPU).
        if grad_output.device.type != "cpu" or float(grad_output) != 1.0:
            grad.mul_(grad_output.to(grad.dtype))
        return grad, None, None, None, None, None, None, None, None


# ----------------------------------------------------------------------------------------------------------------
# Selective-token KD
# ----------------------------------------------------------------------------------------------------------------



def _entropy(logp: Tensor, p: Tensor) -> Tensor:
    """Entropy ``[N]`` from ``[N, V]`` log-probs and probs, with 0 log 0 = 0 at -inf slots."""
    return (p * logp).masked_fill_(torch.isneginf(logp), 0.0).sum(dim=-1).neg_()


def _flat_rows(keep: Tensor) -> Tensor:
    """Flat indices ``b * T + t`` ``[K]`` (int64, ascending) of the true entries of ``keep [B, T]``."""
    return keep.reshape(-1).nonzero().squeeze(1)


def token_scores(
    score: str,
    logits: Tensor,
    teacher_logits: Tensor,
    rows: Tensor,
    *,
    tau: float = 1.0,
    labels: Tensor | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Selection scores ``[K]`` (float32, no gradient) at flat positions ``rows [K]`` (``b * T + t``).

    ``score`` is one of `TOKEN_SCORES`: student / teacher entropy, per-position KL(p_t || p_s), or the teacher's
    cross-entropy on ``labels [B, T]``. Scores use the same tempered distributions the divergence compares.
    """
    if score not in TOKEN_SCORES:
        raise ValueError(f"token_score={score!r} is unknown; use one of {', '.join(TOKEN_SCORES)}")
    if score == "ce_teacher":
        if labels is None:
            raise ValueError(
                "token_score='ce_teacher' needs labels=[B, T] token ids; pass labels or pick another score"
            )
        picked = labels.reshape(-1).to(rows.device)[rows]
        vocab = logits.shape[-1]
        if picked.numel() and (int(picked.min()) < 0 or int(picked.max()) >= vocab):
            raise ValueError(
                f"labels at selected positions must be token ids in [0, {vocab}); found "
                f"[{int(picked.min())}, {int(picked.max())}] -- set the mask false where labels are ignored"
            )
    chunk = chunk_size or default_chunk_rows(logits.shape[-1], logits.device.type)
    student, teacher = _Rows(logits), _Rows(teacher_logits)
    out = torch.empty(rows.numel(), dtype=torch.float32, device=logits.device)
    with torch.no_grad():
        for start in range(0, rows.numel(), chunk):
            part = slice(start, start + chunk)
            if score == "student_entropy":
                out[part] = _entropy(*_distribution(student.read(rows[part]), tau))
            elif score == "teacher_entropy":
                out[part] = _entropy(*_distribution(teacher.read(rows[part]), tau))
            elif score == "kl":
                out[part] = fkl(_make_chunk(student, teacher, rows[part], tau), Hyper(0.0, 0.0))
            else:
                lt, _ = _distribution(teacher.read(rows[part]), tau)
                out[part] = lt.gather(1, picked[part].unsqueeze(1)).squeeze(1).neg_()
    return out


def _keep_counts(n: Tensor, token_ratio: float) -> Tensor:
    """``ceil(r * n)`` per sequence, at least 1 where n > 0 and at most n. ``[B] -> [B]`` int64."""
    # The epsilon absorbs float error (0.3 * 10 = 3.0000000000000004 must give 3, not 4).
    k = torch.ceil(n.double() * token_ratio - 1e-9).long()
    return torch.minimum(k.clamp_min(1), n) * (n > 0)


def _check_ratio(token_ratio: float) -> None:
    if isinstance(token_ratio, bool) or not (isinstance(token_ratio, (int, float)) and 0.0 < token_ratio <= 1.0):
        raise ValueError(f"token_ratio={token_ratio!r} must be in (0, 1]; 1 means dense KD over all masked positions")


def count_selected(mask: Tensor, token_ratio: float = 1.0) -> Tensor:
    """Number of positions `distillation_loss` counts for ``mask [B, T]``: ``sum_b ceil(r * n_b)``. int64 scalar."""
    _check_ratio(token_ratio)
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T]; got shape {tuple(mask.shape)}")
    return _keep_counts(mask.bool().sum(dim=1), token_ratio).sum()


def select_tokens(scores: Tensor, mask: Tensor, token_ratio: float) -> Tensor:
    """Keep, in each sequence, the ceil(r * n) masked positions with the highest score. ``[B, T] -> [B, T] bool``.

    Ties go to the earlier position: both sorts are stable; the first orders by score, the second moves the masked
    positions ahead of the unmasked ones while preserving that order.
    """
    _check_ratio(token_ratio)
    mask = mask.bool()
    by_score = torch.sort(scores, dim=1, descending=True, stable=True).indices
    masked_first = torch.sort(mask.gather(1, by_score).to(torch.int8), dim=1, descending=True, stable=True).indices
    order = by_score.gather(1, masked_first)  # [B, T] positions, best first
    rank = torch.arange(mask.shape[1], device=mask.device).expand_as(order)
    keep_ranked = rank < _keep_counts(mask.sum(dim=1), token_ratio).unsqueeze(1)
    return torch.zeros_like(mask).scatter_(1, order, keep_ranked)


# ----------------------------------------------------------------------------------------------------------------
# Entry point
# ----------------------------------------------------------------------------------------------------------------


def _check_unit(name: str, value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name}={value!r} must be a number in [0, 1]")


def _check_inputs(
    kind: str,
    logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    temperature: float,
    skew_alpha: float,
    jsd_beta: float,
    token_ratio: float,
    token_score: str,
    labels: Tensor | None,
    reduction: str,
    chunk_size: int | None,
) -> DivergenceSpec:
    """Validate everything up front (cheap shape and scalar checks only) and return the divergence spec."""
    if kind not in DIVERGENCES:
        raise ValueError(f"unknown distillation kind {kind!r}; valid kinds: {', '.join(KINDS)}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction={reduction!r} is unknown; use one of {', '.join(REDUCTIONS)}")
    if token_score not in TOKEN_SCORES:
        raise ValueError(f"token_score={token_score!r} is unknown; use one of {', '.join(TOKEN_SCORES)}")
    if token_score == "ce_teacher" and labels is None:
        raise ValueError("token_score='ce_teacher' needs labels=[B, T] token ids; pass labels or pick another score")
    if isinstance(temperature, bool) or not (
        isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature={temperature!r} must be a finite number > 0")
    _check_unit("skew_alpha", skew_alpha)
    _check_unit("jsd_beta", jsd_beta)
    _check_ratio(token_ratio)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive int (or None for the default)")
    if logits.dim() != 3 or logits.shape != teacher_logits.shape:
        same_positions = logits.dim() == 3 and logits.shape[:-1] == teacher_logits.shape[:-1]
        what = "vocabulary sizes differ" if same_positions else "shapes differ"
        raise ValueError(
            f"logits {tuple(logits.shape)} vs teacher_logits {tuple(teacher_logits.shape)}: {what}; both must be "
            f"[B, T, V] with the same V (student and teacher must share one tokenizer)"
        )
    if not (logits.is_floating_point() and teacher_logits.is_floating_point()):
        raise ValueError(f"logits ({logits.dtype}) and teacher_logits ({teacher_logits.dtype}) must be floating point")
    if teacher_logits.device != logits.device:
        raise ValueError(f"teacher_logits is on {teacher_logits.device} but logits on {logits.device}; move one")
    if mask.shape != logits.shape[:2]:
        raise ValueError(f"mask {tuple(mask.shape)} must be [B, T] = {tuple(logits.shape[:2])} of logits")
    if labels is not None and labels.shape != logits.shape[:2]:
        raise ValueError(f"labels {tuple(labels.shape)} must be [B, T] = {tuple(logits.shape[:2])} of logits")
    return DIVERGENCES[kind]


def distillation_loss(
    kind: str,
    logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    skew_alpha: float = 0.1,
    jsd_beta: float = 0.9,
    token_ratio: float = 1.0,
    token_score: str = "student_entropy",
    labels: Tensor | None = None,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Tensor:
    """Divergence between student and teacher next-token distributions over the selected response positions.

    Args:
        kind: one of `KINDS`: ``fkl`` (alias ``kd``), ``rkl``, ``jsd``, ``tvd``, ``sfkl``, ``srkl`` (tau = 1) and their
            ``t``-prefixed twins (``ttvd`` alias ``ttvdf``), which divide both logits by ``temperature`` and multiply
            the divergence by ``temperature ** 2``.
        logits: student logits ``[B, T, V]``, any float dtype (computed in float32); receives the gradient.
        teacher_logits: ``[B, T, V]``, treated as a constant.
        mask: ``[B, T]``, true at response positions.
        temperature: tau of the ``t*`` kinds (ignored by the plain kinds).
        skew_alpha: alpha of ``sfkl`` / ``srkl``, in [0, 1].
        jsd_beta: beta of ``jsd``, in [0, 1].
        token_ratio: keep, per sequence, the ceil(r * n) masked positions with the highest ``token_score``
            (one of `TOKEN_SCORES`, computed without gradient; ties go to the earlier position); 1 is dense KD.
        labels: ``[B, T]`` token ids, required by ``token_score="ce_teacher"``.
        reduction: ``"mean"`` over the selected positions, or ``"sum"`` (to divide by a global `count_selected`).
        chunk_size: positions per chunk (default `default_chunk_rows`); changes memory and speed, not the result.

    Returns:
        float32 scalar; 0 (still connected to ``logits``) when no position is selected.
    """
    spec = _check_inputs(
        kind, logits, teacher_logits, mask, temperature, skew_alpha, jsd_beta, token_ratio, token_score, labels,
        reduction, chunk_size,
    )
    tau = float(temperature) if spec.uses_temperature else 1.0
    teacher = teacher_logits.detach()
    keep = mask.to(device=logits.device, dtype=torch.bool)
    chunk = chunk_size or default_chunk_rows(logits.shape[-1], logits.device.type)
    rows = _flat_rows(keep)
    if token_ratio < 1.0:
        scores = token_scores(token_score, logits.detach(), teacher, rows, tau=tau, labels=labels, chunk_size=chunk)
        dense_scores = torch.zeros(keep.numel(), dtype=torch.float32, device=keep.device)
        dense_scores[rows] = scores
        rows = _flat_rows(select_tokens(dense_scores.view(keep.shape), keep, token_ratio))
    count = rows.numel()
    weight = 1.0 / count if (reduction == "mean" and count > 0) else 1.0
    need_grad = torch.is_grad_enabled() and logits.requires_grad
    hyper = Hyper(float(skew_alpha), float(jsd_beta))
    return _ChunkedDivergence.apply(logits, teacher, rows, spec, hyper, tau, weight, chunk, need_grad)
