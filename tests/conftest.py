"""Shared, session-scoped fixtures: a small instruction corpus and the tiny teacher/student checkpoints of every family.

The checkpoints are built ONCE per test session (one shared byte-level BPE tokenizer, randomly initialised models
sized by configs/models/tiny-*.json) by the same code path as ``python tools/make_tiny_models.py``:

* ``tiny_records``      list of raw instruction records (instruction/input/output/category), deterministic
* ``tiny_corpus_path``  those records as a JSONL file
* ``tiny_models_dir``   the directory holding ``tiny-<family>-<role>/`` checkpoints
* ``tiny_models``       ``{"gpt2": {"teacher": Path, "student": Path}, "opt": ..., "llama": ..., "qwen2": ...}``
* ``tiny_tokenizer_dir`` a checkpoint directory to load the shared tokenizer from (gpt2 teacher)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tools.make_tiny_models import FAMILIES, ROLES, checkpoint_dir, make_tiny_models

_WORDS = (
    "river stone cloud apple garden window music paper silver forest lamp ocean bridge candle market winter "
    "yellow quiet rapid gentle ancient bright narrow heavy"
).split()
_NAMES = ("Ana", "Björn", "Chloé", "Dmitri", "Émile", "Fatima", "Gustav", "Hana")


def make_records(n: int, seed: int) -> list[dict]:
    """Deterministic mix of instruction records: with and without input, lists, arithmetic, accents, CRLF."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        words = rng.sample(_WORDS, rng.randint(2, 6))
        kind = i % 5
        if kind == 0:
            rec = {"instruction": "Reverse the order of these words.", "input": " ".join(words),
                   "output": " ".join(reversed(words)), "category": "reverse"}
        elif kind == 1:
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            rec = {"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}.",
                   "category": "addition"}
        elif kind == 2:
            name = rng.choice(_NAMES)
            rec = {"instruction": f"Write a short note to {name} about the {words[0]}.", "input": "",
                   "output": f"Dear {name},\r\nThe {words[0]} by the {words[1]} is {rng.choice(_WORDS)} today.\r\n"
                             f"Best wishes.", "category": "note"}
        elif kind == 3:
            rec = {"instruction": "Sort the words alphabetically.", "input": ", ".join(words),
                   "output": ", ".join(sorted(words)), "category": "sort"}
        else:
            rec = {"instruction": "Summarize the text in one sentence.",
                   "input": " ".join(rng.choice(_WORDS) for _ in range(30)) + ".",
                   "output": f"It is about the {words[0]} and the {words[-1]}.", "category": "summary"}
        records.append(rec)
    return records


@pytest.fixture(scope="session")
def tiny_records() -> list[dict]:
    return make_records(200, seed=0)


@pytest.fixture(scope="session")
def tiny_corpus_path(tmp_path_factory: pytest.TempPathFactory, tiny_records: list[dict]) -> Path:
    path = tmp_path_factory.mktemp("tiny_corpus") / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_corpus_path: Path) -> Path:
    out = tmp_path_factory.mktemp("tiny_models")
    make_tiny_models([tiny_corpus_path], FAMILIES, vocab_size=1024, out_dir=out, seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_models_dir: Path) -> dict[str, dict[str, Path]]:
    return {f: {r: checkpoint_dir(tiny_models_dir, f, r) for r in ROLES} for f in FAMILIES}


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_models: dict[str, dict[str, Path]]) -> Path:
    return tiny_models["gpt2"]["teacher"]
