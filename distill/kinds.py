"""The names of the divergence kinds and token scores, without torch: the config validates ``--type`` and
``--token-score`` against them before anything heavy loads. distill/losses.py builds its registry on these names and
checks at import that the two agree."""
from __future__ import annotations

#: Plain kinds (tau = 1); each has a ``t``-prefixed temperature twin.
BASE_KINDS: tuple[str, ...] = ("fkl", "rkl", "jsd", "tvd", "sfkl", "srkl")
ALIASES: dict[str, str] = {"kd": "fkl", "ttvdf": "ttvd"}
KINDS: tuple[str, ...] = tuple(k for base in BASE_KINDS for k in (base, "t" + base)) + tuple(ALIASES)
TOKEN_SCORES: tuple[str, ...] = ("student_entropy", "teacher_entropy", "kl", "ce_teacher")
