"""tools/onpolicy_study.py's pure parts: its refusals before any run, the on-policy schedule it reads from a run's
metrics.jsonl, and its table (a run summary without prepare_seconds shows n/a, not a number)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import refused as refused_by

sys.path.insert(0, str(REPO_ROOT / "tools"))

from onpolicy_study import main, onpolicy_stats, render  # noqa: E402


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    return refused_by(main, argv, capsys)


@pytest.mark.parametrize("extra, words", [(["--arms", "sft", "minillm"], ["--arms", "minillm", "distillm"]),
                                          (["--", "--seed", "4"], ["--seed after --", "--seeds"]),
                                          (["--", "--type=rkl"], ["--type after --"]),
                                          (["--seeds", "1", "1"], ["--seeds 1 1", "repeated"]),
                                          (["--jobs", "0"], ["--jobs 0"])])
def test_bad_flags_stop_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str],
                                       words: list[str]) -> None:
    base = ["--teacher", str(tmp_path), "--student", str(tmp_path), "--data-dir", str(tmp_path),
            "--out", str(tmp_path / "out")]
    if "--" in extra:  # the training flags go last
        argv = base + extra
    else:
        argv = extra + base
    err = refused(argv, capsys)
    assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_a_run_of_other_epochs_is_refused_not_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = tmp_path / "out" / "gkd" / "2" / "train"
    train.mkdir(parents=True)
    (train / "args.json").write_text(json.dumps({"epochs": 5}))
    err = refused(["--teacher", str(tmp_path), "--student", str(tmp_path), "--data-dir", str(tmp_path),
                   "--out", str(tmp_path / "out"), "--epochs", "3", "--seeds", "2"], capsys)
    assert "5 epochs" in err and "--epochs 3" in err and "--out" in err
    assert not (train / "run_summary.json").exists()


def test_schedule_read_from_metrics(tmp_path: Path) -> None:
    (tmp_path / "args.json").write_text(json.dumps({"batch_size": 4, "gradient_accumulation_steps": 2}))
    rows = [  # steps 10 and 20: log interval 10; step 25: a last, shorter interval; a validation row between
        {"step": 10, "train/fresh_share": 0.5, "train/replay_share": 0.0, "train/gen_tokens": 40.0,
         "train/threshold": 0.0},
        {"step": 10, "valid/ce": 3.0},
        {"step": 20, "train/fresh_share": 0.0, "train/replay_share": 0.5, "train/gen_tokens": 0.0,
         "train/threshold": 0.1},
        {"step": 25, "train/fresh_share": 1.0, "train/replay_share": 0.0, "train/gen_tokens": 16.0,
         "train/threshold": 0.2}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    st = onpolicy_stats(tmp_path)
    assert st["fresh_share"] == pytest.approx((10 * 0.5 + 5 * 1.0) / 25)
    assert st["replay_share"] == pytest.approx(10 * 0.5 / 25)
    # Fresh answers: interval 1 has 10 steps x 0.5 x 2 micro-batches x 4 rows = 40 answers of 400 tokens (10 each);
    # the last interval 5 x 1 x 2 x 4 = 40 answers of 80 tokens (2 each).
    assert st["answer_tokens"] == pytest.approx((400 + 80) / 80)
    assert st["answer_tokens_first"] == pytest.approx(10.0) and st["answer_tokens_last"] == pytest.approx(2.0)
    assert st["threshold"] == pytest.approx(0.2)
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 10, "train/kd": 1.0}) + "\n")  # an off-policy run
    assert set(onpolicy_stats(tmp_path).values()) == {None}


def test_table_shows_means_and_na_for_a_missing_prepare_time() -> None:
    run = {"rougeL": 20.0, "exact_match": 10.0, "train_s": 100.0, "wall_s": 120.0, "own_rkl": 0.5, "tf_rkl": 0.4,
           "own_tokens": 9.0, "onpolicy": None}
    results = {"fkl": {1: {**run, "prepare_s": 0.0}, 2: {**run, "rougeL": 22.0, "prepare_s": 0.0}},
               "sft": {1: {**run, "prepare_s": None}}}
    refs = {"teacher": {"rougeL": 60.0, "exact_match": 46.0, "own_rkl": 0.0, "tf_rkl": 0.0, "own_tokens": 11.0}}
    table = render(results, refs, "setup", {})
    fkl = next(line for line in table.splitlines() if line.startswith("| KD fkl |"))
    assert "21.00 ± 1.41" in fkl and "| 0.0% |" in fkl
    sft = next(line for line in table.splitlines() if line.startswith("| SFT |"))
    assert "| n/a |" in sft
