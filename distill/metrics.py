"""Generation metrics: Rouge-L and exact match, as used to compare instruction-following students.

Conventions of this line of work: Rouge-L F-measure with the Porter stemmer (rouge-score's default tokenizer, which
lower-cases and keeps only [a-z0-9] tokens), the max over an example's references, averaged and scaled to 0..100;
exact match after lower-casing, removing punctuation and collapsing whitespace.
"""
from __future__ import annotations

import string
from functools import lru_cache
from typing import Sequence

from rouge_score import rouge_scorer


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """Rouge-L F-measure in 0..1."""
    return _scorer().score(target=reference, prediction=prediction)["rougeL"].fmeasure


_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    return " ".join(text.lower().translate(_PUNCT).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def _refs(reference: str | Sequence[str]) -> list[str]:
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise ValueError("an example has no reference answer")
    return refs


def per_example_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> list[dict[str, float]]:
    """[{"rougeL": 0..100, "exact_match": 0|100}] for each example, max over its references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    out = []
    for pred, ref in zip(predictions, references):
        refs = _refs(ref)
        out.append({"rougeL": 100.0 * max(rouge_l(pred, r) for r in refs),
                    "exact_match": 100.0 * max(exact_match(pred, r) for r in refs)})
    return out


def compute_metrics(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """Corpus means (0..100) of Rouge-L and exact match, and the example count."""
    scores = per_example_scores(predictions, references)
    n = max(len(scores), 1)
    return {"rougeL": sum(s["rougeL"] for s in scores) / n,
            "exact_match": sum(s["exact_match"] for s in scores) / n,
            "num_examples": len(scores)}
