"""distill/summary.py: the one best-checkpoint rule (trainer, SRD plan, select_best_checkpoint) and the run summary a
finished run writes (its counters over launches are checked end to end in tests/test_objectives.py)."""
from __future__ import annotations

import json
from pathlib import Path

from distill.summary import RUN_SUMMARY, best_key, is_better, read_summary, write_summary


def pick(values: list[float], metric: str) -> int:
    """The step the rule ends on when evaluations come in step order (steps 1, 2, ...)."""
    best: dict = {}
    for step, v in enumerate(values, 1):
        cand = {"step": step, "metric": metric, "value": v}
        if is_better(cand, best):
            best = cand
    return best.get("step", 0)


def test_rouge_higher_wins_ties_keep_the_earlier_step_and_nan_never_wins() -> None:
    assert pick([10.0, 30.0, 20.0], "valid/rougeL") == 2
    assert pick([30.0, 10.0, 30.0], "valid/rougeL") == 1  # a tie keeps the earlier checkpoint
    assert pick([float("nan"), 5.0, float("nan")], "valid/rougeL") == 2
    assert pick([float("nan")], "valid/rougeL") == 0
    assert pick([float("inf"), 1.0], "valid/rougeL") == 2  # not finite: never the best


def test_validation_loss_lower_wins() -> None:
    assert pick([2.0, 1.5, 1.7], "valid/loss") == 2
    assert pick([1.0, 1.0], "valid/loss") == 1


def test_the_metric_follows_what_was_scored_and_a_change_starts_over() -> None:
    assert best_key({"valid/loss": 1.0, "valid/rougeL": 3.0}) == ("valid/rougeL", True)
    assert best_key({"valid/loss": 1.0}) == ("valid/loss", False)
    loss_best = {"step": 1, "metric": "valid/loss", "value": 0.1}
    assert is_better({"step": 2, "metric": "valid/rougeL", "value": 0.0}, loss_best)


def test_summary_round_trip_and_absence(tmp_path: Path) -> None:
    assert read_summary(tmp_path) is None
    write_summary(tmp_path, {"steps": 3, "best": {"step": 2}})
    assert read_summary(tmp_path) == {"steps": 3, "best": {"step": 2}}
    assert json.loads((tmp_path / RUN_SUMMARY).read_text())["steps"] == 3
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, nothing left over
