"""tools/minillm_study.py's pure parts: its refusals before any run (flags, reused initialisations, run directories
of other settings), MiniLLM's training signals read from metrics.jsonl, and its table."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.conftest import refused as refused_by

sys.path.insert(0, str(REPO_ROOT / "tools"))

from minillm_study import main, render, signals  # noqa: E402


def refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    return refused_by(main, argv, capsys)


def base(tmp_path: Path) -> list[str]:
    return ["--teacher", str(tmp_path), "--student", str(tmp_path), "--data-dir", str(tmp_path),
            "--lm-data-dir", str(tmp_path), "--out", str(tmp_path / "out")]


@pytest.mark.parametrize("extra, words", [
    (["--arms", "minillm", "gkd"], ["--arms", "gkd", "minillm-noreg"]),
    (["--arms", "minillm-lr"], ["minillm-lr", "--budget-lr"]),
    (["--budget-lr", "0"], ["--budget-lr 0"]),
    (["--seeds", "2", "2"], ["--seeds 2 2", "repeated"]),
    (["--total-iters", "0"], ["--total-iters 0"]),
    (["--init-args", "--epochs 2 --seed 3"], ["--init-args", "--seed"]),
    (["--", "--lr", "1e-4"], ["--lr after --", "--budget-lr"]),
    (["--", "--teacher-mixed-alpha=0"], ["--teacher-mixed-alpha after --"])])
def test_bad_flags_stop_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str],
                                       words: list[str]) -> None:
    argv = base(tmp_path) + extra if "--" in extra else extra + base(tmp_path)
    err = refused(argv, capsys)
    assert all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def finished_sft(train: Path, metric: str = "valid/loss", **args: object) -> None:
    train.mkdir(parents=True)
    (train / "7").mkdir()
    (train / "args.json").write_text(json.dumps({"model_path": "stu", "data_dir": "data", "seed": 1,
                                                 "eval_gen": False, "eval_interval": -1, **args}))
    (train / "run_summary.json").write_text(json.dumps({"steps": 9, "best": {"step": 7, "metric": metric}}))


@pytest.mark.parametrize("metric, args, words", [
    ("valid/rougeL", {}, ["valid/rougeL", "valid/loss"]),   # picked by generation, not by the loss
    ("valid/loss", {"eval_interval": 100}, ["eval_interval=100", "-1"]),
    ("valid/loss", {"seed": 2}, ["seed=2"])])
def test_a_reused_initialisation_must_be_chosen_by_validation_loss(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                  metric: str, args: dict, words: list[str]) -> None:
    for p in ("stu", "data", "t"):
        (tmp_path / p).mkdir()
    finished_sft(tmp_path / "sft" / "1" / "train", metric, model_path=str(tmp_path / "stu"),
                 data_dir=str(tmp_path / "data"), **args)
    err = refused(["--teacher", str(tmp_path / "t"), "--student", str(tmp_path / "stu"), "--data-dir",
                   str(tmp_path / "data"), "--lm-data-dir", str(tmp_path / "t"), "--out", str(tmp_path / "out"),
                   "--seeds", "1", "--init-from", str(tmp_path / "sft")], capsys)
    assert all(w in err for w in words), err


def test_a_run_of_other_settings_is_refused_not_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    train = tmp_path / "out" / "minillm-nomix" / "3" / "train"
    train.mkdir(parents=True)
    (train / "args.json").write_text(json.dumps({"total_iters": 200, "lr": 5e-6, "num_rollouts": 128}))
    err = refused(base(tmp_path) + ["--seeds", "3", "--total-iters", "200"], capsys)
    assert "num_rollouts=128" in err and "256" in err and "--out" in err
    assert not (train / "run_summary.json").exists()


def test_signals_first_and_last_logged_interval(tmp_path: Path) -> None:
    rows = [{"step": 8, "train/reward": -3.0, "train/reg": 2.0, "train/clip_fraction": 0.1},
            {"step": 8, "valid/reg": 1.5},  # a validation row is not a training interval
            {"step": 16, "train/reward": -2.0, "train/reg": 1.8, "train/clip_fraction": 0.3}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    s = signals(tmp_path)
    assert s["reward"] == {"first": -3.0, "last": -2.0}
    assert s["reg"] == {"first": 2.0, "last": 1.8}
    assert s["weight_min"] == {"first": None, "last": None}  # not logged: n/a in the table, not a number


def row(rouge: float, own: float, prepare: float | None = None) -> dict:
    return {"rougeL": rouge, "exact_match": 0.0, "own_rkl": own, "tf_rkl": 1.0, "own_tokens": 10.0, "train_s": 10.0,
            "wall_s": 12.0, "prepare_s": prepare, "signals": None}


def test_table_pairs_each_arm_with_its_own_seeds_initialisation() -> None:
    results = {"sft": {1: row(30.0, 2.0), 2: row(20.0, 3.0)},
               "kd": {1: row(31.0, 1.5, 0.0), 2: row(23.0, 2.5, 0.0)},
               "minillm-lr": {1: row(29.0, 1.0), 2: row(20.0, 2.0)}}
    refs = {"teacher": row(60.0, 0.0)}
    table = render(results, refs, "setup", budget_lr=1e-4)
    kd_delta = next(line for line in table.splitlines() if line.startswith("| KD") and "+2.00 ± 1.41" in line)
    assert "-0.5000 ± 0.0000" in kd_delta
    assert "MiniLLM at lr 0.0001" in table and "--budget-lr" not in table
    lr_row = next(line for line in table.splitlines() if line.startswith("| MiniLLM at lr 0.0001 | 24.50"))
    assert lr_row.endswith("| n/a |")  # no prepare_seconds: n/a, not 0
