"""Rouge-L and exact match (distill/metrics.py) on hand-made strings whose scores are worked out by hand."""
from __future__ import annotations

import pytest

from distill.metrics import compute_metrics, exact_match, normalize_answer, per_example_scores, rouge_l


def f_measure(lcs: int, n_pred: int, n_ref: int) -> float:
    """Rouge-L F1 from the longest-common-subsequence length and the two token counts."""
    p, r = lcs / n_pred, lcs / n_ref
    return 2 * p * r / (p + r)


@pytest.mark.parametrize("pred, ref, expected", [
    ("the cat sat on the mat", "the cat sat on the mat", 1.0),
    ("river stone cloud", "apple garden window", 0.0),
    # LCS "the cat on the mat": 5 of 6 tokens on both sides.
    ("the cat lay on the mat", "the cat sat on the mat", f_measure(5, 6, 6)),
    # A gapped subsequence counts in full: precision 3/3, recall 3/6.
    ("a b c", "a x b y c z", f_measure(3, 3, 6)),
    # Same bag of words, reversed order: the LCS is one token (a unigram overlap would give 1.0).
    ("c b a", "a b c", f_measure(1, 3, 3)),
    # The tokenizer lower-cases and drops punctuation.
    ("Hello, World!", "hello world", 1.0),
    ("", "something", 0.0),
])
def test_rouge_l_known_values(pred: str, ref: str, expected: float) -> None:
    assert rouge_l(pred, ref) == pytest.approx(expected, abs=1e-12)


def test_rouge_l_uses_the_porter_stemmer() -> None:
    # "running dogs" stems to "run dog": a full match only with stemming.
    assert rouge_l("running dogs", "run dog") == pytest.approx(1.0)
    assert rouge_l("rivers flowed", "the river flows") == pytest.approx(f_measure(2, 2, 3))


@pytest.mark.parametrize("text, norm", [
    ("The Fox.", "the fox"),
    ("  the\tfox \n", "the fox"),
    ("Hello, world! (again)", "hello world again"),
    ("", ""),
])
def test_normalize_answer(text: str, norm: str) -> None:
    assert normalize_answer(text) == norm


def test_exact_match_after_normalisation() -> None:
    assert exact_match("The Fox.", "the fox") == 1.0
    assert exact_match("the  fox!", "The fox") == 1.0
    assert exact_match("fox", "the fox") == 0.0
    assert exact_match("running", "run") == 0.0  # no stemming in exact match


def test_per_example_scores_take_the_max_over_references() -> None:
    scores = per_example_scores(["a b", "the fox", "x"], [["c d", "a b x"], "The fox.", ["y", "z"]])
    assert scores[0]["rougeL"] == pytest.approx(100 * f_measure(2, 2, 3))
    assert scores[0]["exact_match"] == 0.0
    assert scores[1] == {"rougeL": pytest.approx(100.0), "exact_match": 100.0}
    assert scores[2] == {"rougeL": 0.0, "exact_match": 0.0}
    # The best reference wins wherever it is in the list.
    assert per_example_scores(["a b"], [["a b x", "c d"]]) == per_example_scores(["a b"], [["c d", "a b x"]])
    assert per_example_scores(["fox"], [["the fox", "fox"]])[0]["exact_match"] == 100.0


def test_compute_metrics_means_over_examples() -> None:
    out = compute_metrics(["the cat sat on the mat", "zzz", "c b a"],
                          ["the cat sat on the mat", "yyy", ["a b c", "nothing"]])
    assert out["num_examples"] == 3
    assert out["rougeL"] == pytest.approx(100 * (1.0 + 0.0 + f_measure(1, 3, 3)) / 3)
    assert out["exact_match"] == pytest.approx(100 / 3)


def test_mismatched_lengths_and_missing_references_are_errors() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        per_example_scores(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no reference"):
        per_example_scores(["a"], [[]])
