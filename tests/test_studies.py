"""The study scripts' pure parts: where tools/srd_study.py writes its table, how tools/kd_study.py groups scores by
task category, and their input checks (before any training starts)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tools"))


def test_study_table_goes_between_its_own_markers(tmp_path: Path) -> None:
    from study_common import write_doc

    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nProse stays.\n")
    write_doc(doc, "table A\n", "srd-study tfkl-e2")
    write_doc(doc, "table B\n", "srd-study tfkl-e3")
    write_doc(doc, "table A2\n", "srd-study tfkl-e2")  # a rerun replaces its own block only
    text = doc.read_text()
    assert text.startswith("# Results\n\nProse stays.\n")
    assert "table A\n" not in text and text.count("table A2\n") == 1 and text.count("table B\n") == 1
    assert text.index("table A2") < text.index("table B")


def test_srd_study_refuses_epochs_that_do_not_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from srd_study import main

    with pytest.raises(SystemExit) as e:
        main(["--teacher", str(tmp_path), "--student", str(tmp_path), "--data-dir", str(tmp_path),
              "--epochs", "5", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--epochs 5" in err and "--stage-epochs" in err
    assert not (tmp_path / "out").exists()


def test_study_category_means(tmp_path: Path) -> None:
    from study_common import category_rouge

    for seed, scores in (("1", [10.0, 30.0, 50.0]), ("2", [20.0, 40.0, 70.0])):
        d = tmp_path / seed / "valid" / "10"
        d.mkdir(parents=True)
        cats = ["copy", "copy", "story"]
        d.joinpath("answers.jsonl").write_text(
            "".join(json.dumps({"category": c, "rougeL": r}) + "\n" for c, r in zip(cats, scores)))
    got = category_rouge([tmp_path / "1", tmp_path / "2"])
    assert got == {"copy": pytest.approx(25.0), "story": pytest.approx(60.0)}


def test_kd_study_refuses_unknown_kinds_before_any_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from kd_study import main

    with pytest.raises(SystemExit) as e:
        main(["--teacher", str(tmp_path), "--student", str(tmp_path), "--data-dir", str(tmp_path),
              "--pure-kinds", "fkl", "kl2", "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "kl2" in err and "--pure-kinds" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, words", [(["--keep-stages", "5"], ["--keep-stages 5", "1..4"]),
                                          (["--keep-stages", "4", "--temperatures", "1", "2"],
                                           ["--temperatures has 2 values", "4 stages"])])
def test_srd_study_checks_stages_and_temperatures_first(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                        extra: list[str], words: list[str]) -> None:
    from srd_study import main

    with pytest.raises(SystemExit) as e:
        main(["--teacher", str(tmp_path), "--student", str(tmp_path), "--data-dir", str(tmp_path),
              "--epochs", "12", "--out", str(tmp_path / "out"), *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_srd_study_category_table_counts_parts(tmp_path: Path) -> None:
    from srd_study import category_table

    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"category": c}) + "\n" for c in ["copy", "story", "copy", "story"]))
    ranking = tmp_path / "ranking.jsonl"
    ranking.write_text("".join(json.dumps({"index": i, "part": p}) + "\n" for i, p in [(1, 0), (3, 0), (0, 1), (2, 1)]))
    for arm, (copy, story) in (("plain", (20.0, 60.0)), ("srd", (5.0, 70.0))):
        d = tmp_path / arm / "valid" / "10"
        d.mkdir(parents=True)
        d.joinpath("answers.jsonl").write_text(json.dumps({"category": "copy", "rougeL": copy}) + "\n"
                                               + json.dumps({"category": "story", "rougeL": story}) + "\n")
    table = category_table([tmp_path / "plain"], [tmp_path / "srd"], ranking, train, num_parts=2, trained=1)
    assert "part 1 is never trained" in table
    assert "| copy | 20.0 | 5.0 | -15.0 | 0 / 2 |" in table and "| story | 60.0 | 70.0 | +10.0 | 2 / 0 |" in table
    assert "corrupted label" not in table  # clean data: no noise line

    # data with marked wrong labels (make_synthetic_data.py --noise-frac): where the ranking put them
    train.write_text("".join(json.dumps({"category": c, **({"noisy": True} if n else {})}) + "\n"
                             for c, n in [("copy", True), ("story", False), ("copy", False), ("story", True)]))
    table = category_table([tmp_path / "plain"], [tmp_path / "srd"], ranking, train, num_parts=2, trained=1)
    assert "corrupted label (`noisy`) in each part, easiest first: 1 / 1 of 2 / 2 (50 % of them in the untrained" \
        in table
    table = category_table([tmp_path / "plain"], [tmp_path / "srd"], ranking, train, num_parts=2, trained=2)
    assert "easiest first: 1 / 1 of 2 / 2.\n" in table and "untrained" not in table


def test_srd_study_table_criteria_and_sft_reference() -> None:
    from srd_study import render

    row = {"plain_rougeL": 30.0, "srd_rougeL": 29.7, "plain_train_s": 100.0, "srd_train_s": 60.0,
           "plain_wall_s": 110.0, "srd_wall_s": 70.0, "tokens_ratio": 0.5}
    rows = [{"seed": 1, **row, "sft_rougeL": 25.0}, {"seed": 2, **row, "srd_rougeL": 29.1, "sft_rougeL": 27.0}]
    table = render(rows, "setup", 33.0, None)
    assert "training time ratio 0.60 (<= 0.7), Rouge-L difference -0.60 (lower by more than 0.5)" in table
    assert "Rouge-L 26.00 ± 1.41 (seeds: 25.00, 27.00)" in table
    table = render([{k: v for k, v in r.items() if k != "sft_rougeL"} for r in rows[:1]], "setup", 33.0, None)
    assert "Rouge-L difference -0.30 (not lower by more than 0.5)" in table and "--with-sft" not in table


def test_kd_study_remeasures_only_runs_lacking_a_needed_direction(tmp_path: Path) -> None:
    from kd_study import OWN_DIRECTION, divergence_missing

    assert OWN_DIRECTION["kd"] == "fkl" and OWN_DIRECTION["ttvdf"] == "ttvd" and OWN_DIRECTION["tfkl"] == "tfkl"
    div = tmp_path / "divergence.json"
    directions = ["fkl", "rkl", "tfkl"]
    assert divergence_missing(div, "tfkl-pure", directions)  # never measured
    div.write_text(json.dumps({"fkl": 0.3, "rkl": 0.4}))  # measured before t* kinds were judged at their tau
    assert divergence_missing(div, "tfkl", directions) and divergence_missing(div, "sft", directions)
    assert not divergence_missing(div, "rkl-pure", directions)
    div.write_text(json.dumps({"fkl": 0.3, "rkl": 0.4, "tfkl": 0.9}))
    assert not divergence_missing(div, "tfkl", directions) and not divergence_missing(div, "sft", directions)


def test_srd_study_variant_names() -> None:
    from distill.srd import temperature_schedule
    from srd_study import variant_name

    assert variant_name("tfkl", 4, 3, 4, [1.0, 1.5, 2.0]) == "tfkl-e4"
    assert variant_name("tfkl", 1, 3, 4, [1.0, 1.0, 1.0]) == "tfkl-e1-t1-1-1"
    assert variant_name("tfkl", 3, 4, 4, temperature_schedule(4)) == "tfkl-e3-k4"  # 1 -> 2 linear
    assert variant_name("tfkl", 4, 3, 4, [1.0, 1.5, 2.0], "category") == "tfkl-e4-by-category"
    assert variant_name("tfkl", 1, 3, 4, [1.0, 1.0, 1.0], "category") == "tfkl-e1-t1-1-1-by-category"


def test_srd_study_release_tables_average_each_arm() -> None:
    from srd_study import release_tables

    def row(seed: int, srd: float, kd: float, kd_all: float, scale: float) -> dict:
        return {"seed": seed, "srd_rougeL": srd, "kd_rougeL": kd, "kd_all_rougeL": kd_all,
                "srd_wall_s": 100 * scale, "srd_reflection_s": 10.0, "kd_wall_s": 200 * scale,
                "kd_all_wall_s": 400 * scale, "srd_train_s": 50 * scale, "kd_train_s": 100 * scale,
                "kd_all_train_s": 200 * scale, "srd_tokens": 1000, "kd_tokens": 4000, "kd_all_tokens": 2000}

    text = release_tables([row(1, 30.0, 32.0, 31.0, 1.0), row(2, 34.0, 33.0, 35.0, 3.0)])
    lines = text.splitlines()
    assert "| 1 | 30.00 | 32.00 | 31.00 | -2.00 | -1.00 |" in lines
    # mean ± sample std of (30, 34) is 32.00 ± 2.83; the differences are means of the per-seed differences
    assert "| mean | 32.00 ± 2.83 | 32.50 ± 0.71 | 33.00 ± 2.83 | -0.50 | -1.00 |" in lines
    assert "| 2 | 300 (10) | 600 | 1200 | 150 | 300 | 600 | 1,000 | 4,000 | 2,000 |" in lines
    # ratios of means: wall 200/400 and 200/800, tokens 1000/4000 and 1000/2000
    assert "wall 0.50 and 0.25" in text and "tokens 0.25 and 0.50" in text
