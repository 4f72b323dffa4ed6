"""The names of the divergence kinds and token scores, without torch: the config validates ``--type`` and
``--token-score`` against them before anything heavy loads. distill/losses.py builds its registry on these names and
checks at import that the two agree."""
from __future__ import annotations

#: Plain kinds (tau = 1); each has a ``t``-prefixed temperature twin.
BASE_KINDS: tuple[str, ...] = ("fkl", "rkl", "jsd", "tvd", "sfkl", "srkl")
ALIASES: dict[str, str] = {"kd": "fkl", "ttvdf": "ttvd"}
KINDS: tuple[str, ...] = tuple(k for base in BASE_KINDS for k in (base, "t" + base)) + tuple(ALIASES)
TOKEN_SCORES: tuple[str, ...] = ("student_entropy", "teacher_entropy", "kl", "ce_teacher")


def _resolve(kind: str) -> str:
    return ALIASES.get(kind, kind)


def uses_temperature(kind: str) -> bool:
    """True for the ``t``-prefixed kinds (and their aliases), the ones ``--temperature-kld`` applies to."""
    return _resolve(kind) not in BASE_KINDS


def base_kind(kind: str) -> str:
    """The plain kind a name computes: ``tsfkl`` -> ``sfkl``, ``kd`` -> ``fkl``, ``ttvdf`` -> ``tvd``."""
    name = _resolve(kind)
    return name if name in BASE_KINDS else name[1:]


#: On-policy schedules a ``--type`` may carry as a prefix (``mixed-jsd``, ``adaptive-sfkl``), as the DistiLLM
#: repository's launch lines do: ``mixed`` (GKD, ImitKD: student outputs with probability --mixed-alpha) and
#: ``adaptive`` (DistiLLM's adaptive off-policy schedule). The divergence is the rest of the name.
SCHEDULES: tuple[str, ...] = ("mixed", "adaptive")


def split_type(type_: str) -> tuple[str, str]:
    """``("mixed", "jsd")`` for ``mixed-jsd``; ``("", kind)`` for a plain kind. A known prefix only: ``--type``
    names are parsed, never matched by substring."""
    head, sep, tail = type_.partition("-")
    if sep and head in SCHEDULES:
        return head, tail
    return "", type_


def trl_generalized_jsd(beta: float) -> tuple[str, float]:
    """The (kind, jsd_beta) computing TRL's generalised JSD with its ``beta``: m = beta p_T + (1 - beta) q,
    beta KL(p_T || m) + (1 - beta) KL(q || m). TRL takes beta 0 as the forward KL and 1 as the reverse KL; in between
    it is this toolkit's ``jsd`` with ``jsd_beta = 1 - beta`` (same mixture, same weights)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return "fkl", 0.5
    if beta == 1.0:
        return "rkl", 0.5
    return "jsd", 1.0 - beta
