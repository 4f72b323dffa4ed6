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
