"""tools/feature_kd_study.py's pure parts: its refusals before any run, the feature signals read from metrics.jsonl,
and its tables (the paired change and overhead against the same seed's run without the feature term)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import refused as refused_by

sys.path.insert(0, str(REPO_ROOT / "tools"))

from feature_kd_study import feature_signals, main, render  # noqa: E402


def base(tmp_path: Path) -> list[str]:
    return ["--teacher", str(tmp_path), "--student", str(tmp_path), "--data-dir", str(tmp_path),
            "--lm-data-dir", str(tmp_path), "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("extra, words", [
    (["--methods", "grad", "saliency"], ["--methods", "saliency", "integrated_grads"]),
    (["--objectives", "gkd"], ["--objectives", "gkd", "minillm"]),
    (["--seeds", "2", "2"], ["--seeds 2 2", "repeated"]),
    (["--lr", "0"], ["--lr 0"]),
    (["--selection-refresh", "-1"], ["--selection-refresh"]),
    (["--feature-args", "--hidden --method grad --alpha-corr 1"], ["--method", "--methods"]),
    (["--", "--selection-refresh", "1"], ["--selection-refresh after --"]),
    (["--", "--lr=1e-4"], ["--lr after --"]),
    (["--init-args", "--epochs 2 --seed 3"], ["--init-args", "--seed"])])
def test_bad_flags_stop_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str],
                                       words: list[str]) -> None:
    argv = base(tmp_path) + extra if "--" in extra else extra + base(tmp_path)
    err = refused_by(main, argv, capsys)
    assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_a_run_of_another_refresh_is_refused_not_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = tmp_path / "out" / "kd-grad" / "1" / "train"
    train.mkdir(parents=True)
    (train / "args.json").write_text(json.dumps({"total_iters": 200, "lr": 1.65e-4, "method": "grad",
                                                 "selection_refresh": 1}))
    err = refused_by(main, base(tmp_path) + ["--seeds", "1", "--objectives", "kd", "--methods", "grad"], capsys)
    assert "selection_refresh=1" in err and "10" in err and "--out" in err


def test_feature_signals_total_the_attribution_seconds_over_the_log_windows(tmp_path: Path) -> None:
    rows = [{"step": 8, "train/loss": 1.0, "train/feat": 3.0, "train/attribution_seconds": 0.5,
             "train/selection_overlap": 0.75},
            {"step": 16, "train/loss": 1.0, "train/feat": 2.0, "train/attribution_seconds": 0.25},
            {"step": 20, "train/loss": 1.0, "train/feat": 1.5, "train/attribution_seconds": 1.0,
             "train/selection_overlap": 0.25},
            {"step": 20, "valid/feat": 1.25, "valid/loss": 2.0}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    s = feature_signals(tmp_path)
    assert s["attribution_s"] == pytest.approx(8 * 0.5 + 8 * 0.25 + 4 * 1.0)  # a mean per step x the window's steps
    assert (s["feat_first"], s["feat_last"], s["valid_feat"]) == (3.0, 1.5, 1.25)
    assert s["overlap"] == pytest.approx(0.5)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 8, "train/loss": 1.0}) + "\n")
    assert feature_signals(tmp_path)["attribution_s"] is None  # no feature term: n/a, not 0


def result(rouge: float, train_s: float, feat: bool = True) -> dict:
    return {"rougeL": rouge, "exact_match": 1.0, "train_s": train_s, "feat_first": 3.0 if feat else None,
            "feat_last": 2.0 if feat else None, "valid_feat": 2.5 if feat else None, "overlap": 0.9 if feat else None,
            "attribution_s": 0.2 * train_s if feat else None}


def test_table_pairs_each_method_with_the_same_seeds_run_without_the_term() -> None:
    results = {"kd": {1: result(30.0, 10.0, False), 2: result(20.0, 20.0, False)},
               "kd-grad": {1: result(31.0, 15.0), 2: result(23.0, 20.0)}}
    timing = {"kd": {"train_s": 4.0, "steps": 8, "attribution_s": None},
              "kd-grad": {"train_s": 10.0, "steps": 8, "attribution_s": 5.0}}
    table = render(results, timing, {"teacher": {"rougeL": "60.00", "exact_match": "40.00"}}, "setup")
    grad = next(line for line in table.splitlines() if line.startswith("| kd | grad | 27.00"))
    assert "+2.00 ± 1.41" in grad  # +1 and +3, paired by seed
    assert "+25%" in grad  # 15/10 - 1 = 50 % and 20/20 - 1 = 0 %
    assert "3.000 → 2.000" in grad and "20.0%" in grad
    none = next(line for line in table.splitlines() if line.startswith("| kd | none |"))
    assert none.endswith("| n/a |")
    timed = next(line for line in table.splitlines() if line.startswith("| kd | grad | 8 |"))
    assert "| 1.250 | 2.50 | 0.625 | 50.0% |" in timed


def test_a_training_run_is_run_once_and_a_reused_initialisation_is_not_trained(tmp_path: Path) -> None:
    import argparse

    from study_common import sft_initialiser, train_once

    run_dir = tmp_path / "kd" / "1"
    train_once([sys.executable, "-c", "pass"], run_dir)  # --save/--resume are appended; `python -c` ignores them
    assert json.loads((run_dir / "process_wall.json").read_text())["wall_seconds"] >= 0
    (run_dir / "train").mkdir()
    (run_dir / "train" / "run_summary.json").write_text("{}")
    train_once([sys.executable, "-c", "raise SystemExit(3)"], run_dir)  # finished: not run again (it would fail)
    init = tmp_path / "sft" / "1" / "train"
    (init / "7").mkdir(parents=True)
    (init / "run_summary.json").write_text(json.dumps({"best": {"step": 7, "metric": "valid/loss"}}))
    args = argparse.Namespace(init_from=str(tmp_path / "sft"), student="s", init_args="", train_args=[])
    checkpoint = sft_initialiser(args, tmp_path / "out", {1: init}, [], None)
    assert checkpoint(1) == init / "7" and not (tmp_path / "out" / "init").exists()
