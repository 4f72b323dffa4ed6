"""Selective Reflection Distillation: ranking (both tie orders), staging, the stage schedule, what the plan reads from
run summaries, stage data, reflection (one rank and two) and the staged runner (distill/srd.py, distill/srd_plan.py,
distill/srd_runner.py).

The pure parts are checked on hand-made inputs (run summaries written by hand); reflection and the runner run for real
on the tiny GPT-2 pair and the shared 200-example processed set (reflection and stages in fork-server children, as
``--launcher fork`` does); the launch scripts are checked with a stand-in ``PYTHON`` that records the runner's command
line.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pytest
import torch

from data_utils.datasets import InstructionDataset, LMCollator
from data_utils.indexed_dataset import IndexedDataset
from distill import srd
from distill.config import InputError
from distill.metrics import per_example_scores

from distill import srd_plan
from distill import srd_runner as srd_run


# ----------------------------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------------------------
def test_fractional_ranks_share_ties_and_put_missing_last() -> None:
    assert srd.fractional_ranks([0.5, 0.9, 0.5, 0.1], higher_is_easier=True) == [2.5, 1.0, 2.5, 4.0]
    assert srd.fractional_ranks([3.0, None, 1.0, None], higher_is_easier=False) == [2.0, 3.5, 1.0, 3.5]
    assert srd.fractional_ranks([7, 7, 7], higher_is_easier=False) == [2.0, 2.0, 2.0]


def test_rrf_order_depends_on_k() -> None:
    # Ranks (Rouge-L, loss): A (1, 4), B (2, 2), C (3, 1), D (4, 3).
    rouge = [100.0, 80.0, 60.0, 40.0]
    loss = [4.0, 2.0, 1.0, 3.0]
    at = {k: [r["index"] for r in srd.rank_examples(rouge, loss, "rrf", k)] for k in (0.0, 60.0)}
    # k = 0: A 1 + 1/4 = 1.25 beats B 1/2 + 1/2 = 1.0; C = 1/3 + 1 = 1.33 first.
    assert at[0.0] == [2, 0, 1, 3]
    # k = 60: the flatter weights prefer two middling ranks: C 0.032266 > B 0.032258 > A 0.032018 > D.
    assert at[60.0] == [2, 1, 0, 3]
    ranked = srd.rank_examples(rouge, loss, "rrf", 60.0)
    assert ranked[0] == {"index": 2, "rank_rouge": 3.0, "rank_loss": 1.0, "score": pytest.approx(1 / 63 + 1 / 61)}
    assert [r["index"] for r in srd.rank_examples(rouge, loss, "rouge")] == [0, 1, 2, 3]
    assert [r["index"] for r in srd.rank_examples(rouge, loss, "loss")] == [2, 1, 3, 0]


def test_equal_scores_and_tied_metrics_keep_index_order() -> None:
    # Swapped ranks give exactly equal fused scores; the lower example index goes first, whatever the data order.
    assert [r["index"] for r in srd.rank_examples([1.0, 2.0], [1.0, 2.0])] == [0, 1]
    assert [r["index"] for r in srd.rank_examples([2.0, 1.0], [2.0, 1.0])] == [0, 1]
    ranked = srd.rank_examples([50.0, 10.0, 50.0], [1.0, 1.0, 1.0], "rrf", 60.0)
    assert [r["index"] for r in ranked] == [0, 2, 1]
    assert [r["rank_rouge"] for r in ranked] == [1.5, 1.5, 3.0]
    assert ranked[0]["score"] == ranked[1]["score"]
    # A missing loss is the hardest on that metric.
    assert [r["index"] for r in srd.rank_examples([5.0, 5.0], [None, 2.0], "loss")] == [1, 0]
    with pytest.raises(ValueError, match="rank-by"):
        srd.rank_examples([1.0], [1.0], "bleu")
    with pytest.raises(ValueError, match="rrf-k"):
        srd.rank_examples([1.0], [1.0], "rrf", -1.0)


def _release_rank(rouge: list[float], loss: list[float], k: int = 60) -> list[int]:
    """tools/rank.py of the SRD release, transcribed: the reference the ``stable`` tie order must reproduce."""
    data = [{"i": i, "Rouge_L": r, "lm_loss": m} for i, (r, m) in enumerate(zip(rouge, loss))]
    data = sorted(data, key=lambda x: x["Rouge_L"], reverse=True)
    for i in range(len(data)):
        data[i]["RoughL_rank"] = i + 1
    data = sorted(data, key=lambda x: x["lm_loss"], reverse=False)
    for i in range(len(data)):
        data[i]["lmloss_rank"] = i + 1
    for d in data:
        d["hybrid_rank_score"] = 1 / (int(d["RoughL_rank"]) + k) + 1 / (int(d["lmloss_rank"]) + k)
    data = sorted(data, key=lambda x: x["hybrid_rank_score"], reverse=True)
    return [d["i"] for d in data]


def test_stable_ties_follow_the_releases_sorts() -> None:
    # Tied Rouge-L keeps the file order; tied loss keeps the Rouge-L order; tied scores keep the loss order.
    ranked = srd.rank_examples([10.0, 50.0, 10.0], [5.0, 6.0, 4.0], "rrf", 60.0, "stable")
    assert {r["index"]: r["rank_rouge"] for r in ranked} == {1: 1.0, 0: 2.0, 2: 3.0}
    tied_loss = srd.rank_examples([10.0, 50.0], [1.0, 1.0], "rrf", 60.0, "stable")
    assert {r["index"]: r["rank_loss"] for r in tied_loss} == {1: 1.0, 0: 2.0}
    swapped = srd.rank_examples([90.0, 80.0], [2.0, 1.0], "rrf", 60.0, "stable")  # ranks (1, 2) and (2, 1)
    assert swapped[0]["score"] == swapped[1]["score"] and [r["index"] for r in swapped] == [1, 0]
    assert [r["index"] for r in srd.rank_examples([90.0, 80.0], [2.0, 1.0])] == [0, 1]  # average ties: index order
    # The release's own loop on data with many ties (Rouge-L of short answers is often 0 or 100).
    rng = np.random.default_rng(0)
    rouge = rng.choice([0.0, 25.0, 50.0, 100.0], size=300).tolist()
    loss = np.round(rng.uniform(0.5, 3.0, size=300), 1).tolist()
    assert [r["index"] for r in srd.rank_examples(rouge, loss, "rrf", 60.0, "stable")] == _release_rank(rouge, loss)
    assert [r["index"] for r in srd.rank_examples(rouge, loss, "rrf", 60.0)] != _release_rank(rouge, loss)
    # One metric alone: its stable order; a missing loss still sorts last.
    assert [r["index"] for r in srd.rank_examples([5.0, 5.0, 9.0], [1.0, 1.0, 1.0], "rouge", ties="stable")] == \
        [2, 0, 1]
    assert [r["index"] for r in srd.rank_examples([5.0, 5.0, 5.0], [None, 2.0, 2.0], "loss", ties="stable")] == \
        [1, 2, 0]
    with pytest.raises(ValueError, match="rank-ties"):
        srd.rank_examples([1.0], [1.0], ties="random")


# ----------------------------------------------------------------------------------------------------------------
# Staging and the temperature schedule
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, parts, sizes", [(10, 4, [3, 3, 2, 2]), (12, 4, [3, 3, 3, 3]), (7, 3, [3, 2, 2]),
                                             (5, 5, [1, 1, 1, 1, 1]), (9, 1, [9]), (11, 2, [6, 5])])
def test_part_sizes(n: int, parts: int, sizes: list[int]) -> None:
    assert srd.part_sizes(n, parts) == sizes


def test_stage_lists_are_cumulative_and_drop_the_hardest() -> None:
    order = [9, 3, 5, 0, 1, 8, 2, 7, 6, 4]  # easy -> hard; parts 3, 3, 2, 2
    assert srd.stage_index_lists(order, 4) == [order[:3], order[:6], order[:8]]
    assert srd.stage_index_lists(order, 4, keep_stages=4)[-1] == order
    assert srd.stage_index_lists(order, 4, keep_stages=1) == [order[:3]]
    assert srd.stage_index_lists(order, 1) == [order]  # one part: nothing can be dropped
    assert srd.stage_index_lists(order, 2) == [order[:5]]
    with pytest.raises(ValueError, match="keep-stages"):
        srd.stage_index_lists(order, 4, keep_stages=5)
    with pytest.raises(ValueError, match="keep-stages"):
        srd.stage_index_lists(order, 4, keep_stages=0)
    with pytest.raises(ValueError, match="lower --num-stages"):
        srd.part_sizes(3, 4)


def test_stratified_ranking_cuts_every_group_into_its_own_parts() -> None:
    # Two groups on different Rouge-L scales: a global ranking would put all of "story" last and drop it.
    groups = ["copy"] * 8 + ["story"] * 4 + ["tiny"]
    rouge = [90.0, 80, 70, 60, 50, 40, 30, 20] + [9.0, 8, 7, 6] + [5.0]
    loss = [float(i) for i in range(13)]  # agrees with Rouge-L inside each group
    assert [r["index"] for r in srd.rank_examples(rouge, loss)][-4:] == [9, 10, 11, 12]
    ranked, sizes = srd.stratified_ranking(rouge, loss, groups, num_parts=4)
    assert sizes == [4, 3, 3, 3]  # copy 2/2/2/2, story 1/1/1/1, tiny (one example) in part 0
    assert srd.stratified_part_sizes(groups, 4) == sizes  # known before the reflection
    # parts {0, 1, 8, 12}, {2, 3, 9}, {4, 5, 10}, {6, 7, 11}; inside a part by relative position in the group
    # (copy's 2nd of 8 at 1.5/8 comes before tiny's only example at 0.5/1)
    assert [r["index"] for r in ranked] == [0, 8, 1, 12, 2, 9, 3, 4, 10, 5, 6, 11, 7]
    assert [r["group"] for r in ranked[:4]] == ["copy", "story", "copy", "tiny"]
    assert ranked[0]["rank_rouge"] == 1.0 and ranked[1]["rank_rouge"] == 1.0  # ranks are within the group
    stages = srd.stage_index_lists([r["index"] for r in ranked], 4, sizes=sizes)
    assert [len(s) for s in stages] == [4, 7, 10]
    dropped = set(range(13)) - set(stages[-1])
    assert dropped == {6, 7, 11}  # each group's hardest quarter, not a whole group
    # one group: the same order as the global ranking
    one, one_sizes = srd.stratified_ranking(rouge, loss, ["x"] * 13, 4)
    assert [r["index"] for r in one] == [r["index"] for r in srd.rank_examples(rouge, loss)]
    assert one_sizes == srd.part_sizes(13, 4)
    with pytest.raises(ValueError, match="group labels"):
        srd.stratified_ranking(rouge, loss, groups[:-1], 4)
    with pytest.raises(ValueError, match="lower --num-stages"):
        srd.stratified_ranking([1.0, 2.0], [1.0, 2.0], ["a", "b"], 4)
    with pytest.raises(ValueError, match="do not cut"):
        srd.stage_index_lists(list(range(13)), 4, sizes=[4, 3, 3, 2])


def test_temperature_schedule() -> None:
    assert srd.temperature_schedule(3) == [1.0, 1.5, 2.0]
    assert srd.temperature_schedule(5, start=1.0, end=3.0) == [1.0, 1.5, 2.0, 2.5, 3.0]
    assert srd.temperature_schedule(2, start=2.0, end=1.0) == [2.0, 1.0]
    assert srd.temperature_schedule(1, start=1.5, end=9.0) == [1.5]
    assert srd.temperature_schedule(3, [0.5, 1.0, 4.0], start=9.0, end=9.0) == [0.5, 1.0, 4.0]
    assert srd.temperature_schedule(3, [1.5]) == [1.5, 1.5, 1.5]  # one value: every stage
    with pytest.raises(ValueError, match="one for all or one per trained stage"):
        srd.temperature_schedule(3, [1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        srd.temperature_schedule(2, start=0.0, end=1.0)


# ----------------------------------------------------------------------------------------------------------------
# The stage plan: schedule, run summaries, best checkpoint, report (distill/srd_plan.py)
# ----------------------------------------------------------------------------------------------------------------
def test_stage_schedule_is_one_value_for_all_or_one_per_stage() -> None:
    cfg, rest = srd_plan.split_argv(["--stage-kd-ratio", "0.8", "0.9", "1.0", "--stage-lr", "1e-4", "--lr", "5e-4",
                                     "--stage-lr-min", "1.2345678e-7", "--stage-epochs", "8", "--temperatures", "1",
                                     "1.5", "2", "--stage-eval-interval", "-1", "--stage-save-interval", "-1",
                                     "--stage-lr-schedule", "cosine", "constant", "cosine", "--stage-warmup-iters",
                                     "0", "20", "0"])
    assert rest == ["--lr", "5e-4"]
    sched = srd_plan.stage_schedules(cfg, cfg.trained_stages)
    assert [s["temperature"] for s in sched] == [1.0, 1.5, 2.0]
    argv = srd_plan.stage_argv([*rest, "--teacher-model-path", "t"], stage=1, init="s0", data_dir="d1", save="r/1",
                               schedule=sched[1], resume=False, peft_base=None, run_name="r")
    args = srd_plan.parse_train_argv(argv)  # what the stage's train_distill.py uses: the stage's values win
    assert (args.train.lr, args.train.lr_min, args.train.lr_schedule, args.train.warmup_iters, args.train.epochs,
            args.train.eval_interval, args.train.save_interval, args.distill.kd_ratio, args.distill.temperature_kld) \
        == (1e-4, 1.2345678e-7, "constant", 20, 8, -1, -1, 0.9, 1.5)
    # Without per-stage values every stage has the pass-through ones; --stage-iters sets --total-iters.
    cfg, rest = srd_plan.split_argv(["--kd-ratio", "0.5", "--stage-iters", "7", "9", "11"])
    assert [s["flags"] for s in srd_plan.stage_schedules(cfg, 3)] == [{"--total-iters": n} for n in (7, 9, 11)]
    cfg, _ = srd_plan.split_argv(["--stage-kd-ratio", "0.8", "0.9"])
    with pytest.raises(InputError, match="--stage-kd-ratio has 2 values but 3 stages are trained .*give 1 or 3"):
        srd_plan.stage_schedules(cfg, 3)
    for bad in (["--stage-kd-ratio", "1.5"], ["--stage-lr-schedule", "linear"], ["--stage-lr", "0"],
                ["--stage-eval-interval", "-2"], ["--stage-epochs", "1", "--stage-iters", "5"]):
        with pytest.raises(SystemExit):
            srd_plan.split_argv(bad)


def _fake_run(run: Path, *, steps: int, total: int, per_epoch: int, best: Optional[dict] = None,
              complete: Sequence[int] = (), args: Optional[dict] = None, **summary: Any) -> Path:
    """A stage directory as the trainer leaves it: complete checkpoints, args.json and run_summary.json."""
    for step in complete:
        (run / str(step)).mkdir(parents=True)
        (run / str(step) / "trainer_state.json").write_text("{}")
    run.mkdir(parents=True, exist_ok=True)
    (run / "args.json").write_text(json.dumps(args or {}))
    (run / "run_summary.json").write_text(json.dumps({"steps": steps, "total_iters": total,
                                                      "steps_per_epoch": per_epoch, "best": best or {}, **summary}))
    return run


def _rouge(step: int, value: float) -> dict:
    return {"step": step, "metric": "valid/rougeL", "value": value}


def _train(*flags: str) -> Any:
    return srd_plan.parse_train_argv(["--teacher-model-path", "t", "--save", "s", *flags]).train


def test_a_stage_is_finished_by_its_run_summary(tmp_path: Path) -> None:
    one_epoch = _train("--epochs", "1")
    run = _fake_run(tmp_path / "a", steps=5, total=5, per_epoch=5, complete=[5])
    assert srd_plan.finished_stage(run, one_epoch)["steps"] == 5
    assert srd_plan.finished_stage(run, _train("--epochs", "2")) is None  # more epochs asked for: it continues
    assert srd_plan.finished_stage(run, _train("--total-iters", "5")) is not None
    assert srd_plan.finished_stage(_fake_run(tmp_path / "b", steps=3, total=5, per_epoch=5, complete=[3]),
                                   one_epoch) is None  # stopped early (a diverged run)
    assert srd_plan.finished_stage(_fake_run(tmp_path / "c", steps=5, total=5, per_epoch=5, complete=[4]),
                                   one_epoch) is None  # its last checkpoint is not complete
    assert srd_plan.finished_stage(tmp_path / "none", one_epoch) is None  # never ran


def test_best_across_stages_is_the_trainers_rule_over_their_summaries(tmp_path: Path) -> None:
    save = tmp_path / "run"
    stages = [_fake_run(save / "stage_0", steps=5, total=5, per_epoch=5, best=_rouge(4, 10.0), complete=[4, 5]),
              _fake_run(save / "stage_1", steps=9, total=9, per_epoch=9, best=_rouge(9, 12.5), complete=[9]),
              _fake_run(save / "stage_2", steps=9, total=9, per_epoch=9, best=_rouge(3, 12.5), complete=[3, 9])]
    summaries = [srd.read_jsonl(s / "run_summary.json")[0] for s in stages]
    best = srd_plan.select_best(save, stages, summaries)
    assert (best["stage"], best["step"], best["value"]) == (1, 9, 12.5)  # a tie keeps the earlier stage
    assert os.readlink(save / "best") == "stage_1/9" and json.loads((save / "best.json").read_text()) == best
    summaries[2]["best"] = _rouge(9, float("nan"))  # never best
    summaries[1]["best"] = _rouge(8, 99.0)  # not a complete checkpoint of its stage
    assert srd_plan.select_best(save, stages, summaries)["stage"] == 0
    # The next stage starts from the previous one's last step, or its best checkpoint.
    assert srd_plan.stage_init_path(stages[0], "last", summaries[0]) == str(stages[0] / "5")
    assert srd_plan.stage_init_path(stages[0], "best", summaries[0]) == str(stages[0] / "4")
    with pytest.raises(RuntimeError, match="not a complete checkpoint"):
        srd_plan.stage_init_path(stages[1], "best", summaries[1])


def test_report_lists_every_stage_from_its_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    save = tmp_path / "run"
    stages = []
    for i, (kd, n) in enumerate(((0.8, 50), (0.9, 100))):
        stages.append(_fake_run(save / f"stage_{i}", steps=4 * (i + 1), total=4 * (i + 1), per_epoch=2 * (i + 1),
                                best=_rouge(4 * (i + 1), 10.0 + i), complete=[4 * (i + 1)],
                                args={"kd_ratio": kd, "lr": 1e-4, "lr_min": 1e-7, "temperature_kld": 1.0 + i},
                                train_examples=n, epochs=2.0, tokens=1000 * (i + 1), train_seconds=3.0 + i,
                                wall_seconds=5.0, final={"valid/rougeL": 9.0 + i}))
    plan = {"settings": {"num_stages": 3, "keep_stages": 2, "rank_by": "rrf", "rank_ties": "stable"},
            "num_examples": 150, "reflection": {"wall_seconds": 7.0},
            "stages": [{"temperature": 1.0, "wall_seconds": 20.0}, {"temperature": 2.0, "wall_seconds": 30.0}],
            "best": {"stage": 1, "step": 8, "value": 11.0}}
    report = srd_plan.build_report(plan, stages, "tfkl", (None, "no plain KD run"))
    rows = [{k: r[k] for k in ("kd_ratio", "lr", "temperature", "epochs", "examples", "steps", "tokens",
                               "train_seconds", "wall_seconds", "rougeL_best", "rougeL_final")} for r in report["stages"]]
    assert rows == [{"kd_ratio": 0.8, "lr": 1e-4, "temperature": 1.0, "epochs": 2.0, "examples": 50, "steps": 4,
                     "tokens": 1000, "train_seconds": 3.0, "wall_seconds": 20.0, "rougeL_best": 10.0,
                     "rougeL_final": 9.0},
                    {"kd_ratio": 0.9, "lr": 1e-4, "temperature": 2.0, "epochs": 2.0, "examples": 100, "steps": 8,
                     "tokens": 2000, "train_seconds": 4.0, "wall_seconds": 30.0, "rougeL_best": 11.0,
                     "rougeL_final": 10.0}]
    t = report["total"]
    assert (t["steps"], t["tokens"], t["train_seconds"], t["wall_seconds"], t["rougeL_best"], t["examples"]) == \
        (12, 3000, 7.0, 57.0, 11.0, 100)  # wall: the stages' and the reflection's
    srd_plan.print_report(report)
    out = capsys.readouterr().out
    for col in ("kd-ratio", "lr", "T", "epochs", "examples", "tokens", "train s", "wall s", "Rouge-L best"):
        assert col in out
    stage1 = next(line for line in out.splitlines() if "stage 1" in line)
    for cell in ("0.9", "0.0001", "2", "2.00", "100", "2,000", "4.0", "30.0", "11.00"):
        assert cell in stage1, (cell, stage1)
    assert "7.0" in next(line for line in out.splitlines() if "reflection" in line)
    # A baseline without a run summary is reported, not an error.
    old = tmp_path / "old-kd"
    old.mkdir()
    report = srd_plan.build_report(plan, stages, "tfkl", (old, "plain KD run"))
    assert report["baseline"]["tokens"] is None and "no run_summary.json" in report["baseline_note"]


# ----------------------------------------------------------------------------------------------------------------
# Real data: a tiny processed split
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def processed(processed_tiny: Path) -> Path:
    """200 train / 40 valid synthetic examples processed with the tiny models' tokenizer (shared, read-only here)."""
    return processed_tiny


def test_stage_data_holds_exactly_the_selected_examples(processed: Path, tmp_path: Path) -> None:
    src = IndexedDataset(processed / "train_0")
    src_lines = [l for l in (processed / "train.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
    picked = [5, 0, 170, 3]
    out = tmp_path / "stage_1"
    assert srd.write_stage_data(processed, picked, out, stage=1) is True
    got = IndexedDataset(out / "train_0")
    assert len(got) == len(picked) and got.dtype == src.dtype
    for j, i in enumerate(picked):
        assert np.array_equal(got.prompt(j), src.prompt(i))
        assert np.array_equal(got.response(j), src.response(i))
    assert (out / "train.jsonl").read_text(encoding="utf-8").splitlines() == [src_lines[i] for i in picked]
    for name in ("valid_0.bin", "valid_0.idx", "valid.jsonl"):
        assert (out / name).read_bytes() == (processed / name).read_bytes()
    ds = InstructionDataset(out, "train")  # the trainer's reader accepts it, references included
    assert ds.references(0) == InstructionDataset(processed, "train").references(5)
    assert len(InstructionDataset(out, "valid")) == 40
    assert json.loads((out / "meta.json").read_text())["srd"]["train_examples"] == 4

    mtime = (out / "train_0.bin").stat().st_mtime_ns
    assert srd.write_stage_data(processed, picked, out, stage=1) is False  # current: kept
    assert (out / "train_0.bin").stat().st_mtime_ns == mtime
    assert srd.write_stage_data(processed, [1, 2], out, stage=1) is True  # other selection: replaced
    assert len(IndexedDataset(out / "train_0")) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def _reflect_argv(models: dict, data: Path, srd_dir: Path) -> list[str]:
    return ["--model-path", str(models["gpt2"]["student"]), "--data-dir", str(data), "--srd-dir", str(srd_dir),
            "--part-size", "80", "--max-new-tokens", "4", "--eval-batch-size", "40", "--loss-batch-size", "16"]


def test_reflection_scores_and_resumes(processed: Path, tiny_models: dict, tmp_path: Path,
                                       capfd: pytest.CaptureFixture) -> None:
    srd_dir = tmp_path / "srd"
    launch = srd_run.ForkLauncher()
    argv = _reflect_argv(tiny_models, processed, srd_dir)
    assert launch("reflect", argv) == 0
    recs = srd.load_reflection(srd_dir / srd.REFLECTION_FILE, 200)
    parts = sorted((srd_dir / srd.REFLECTION_PARTS).glob("part_*.jsonl"))
    assert [p.name for p in parts] == ["part_00000.jsonl", "part_00001.jsonl", "part_00002.jsonl"]

    # Each record's scores are what they claim: Rouge-L of its response, and the mean token CE on the ground truth.
    from distill.models import load_model, load_tokenizer

    tok = load_tokenizer(str(tiny_models["gpt2"]["student"]))
    model = load_model(str(tiny_models["gpt2"]["student"])).eval()
    ds = InstructionDataset(processed, "train")
    for i in (0, 97, 199):
        assert recs[i]["rougeL"] == pytest.approx(per_example_scores([recs[i]["response"]], [ds.references(i)])[0]
                                                  ["rougeL"])
        prompt, response = ds[i]["prompt"], ds[i]["response"]
        seq = torch.tensor(np.concatenate([prompt, response, [tok.eos_token_id]]), dtype=torch.long)[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=seq).logits[0].float(), -1)
        targets = seq[0, len(prompt):]  # response tokens and the EOS, each predicted from the position before
        expected = -logp[torch.arange(len(prompt) - 1, seq.shape[1] - 1), targets].mean().item()
        assert recs[i]["loss"] == pytest.approx(expected, rel=1e-4)
        assert recs[i]["loss_tokens"] == len(targets)

    # Interrupted run: part 1 and the assembled file are gone; only part 1 is recomputed.
    (srd_dir / srd.REFLECTION_FILE).unlink()
    parts[1].unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in (parts[0], parts[2])}
    capfd.readouterr()
    assert launch("reflect", argv) == 0
    assert "2 already done, 1 to compute" in capfd.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (parts[0], parts[2])} == kept
    assert srd.load_reflection(srd_dir / srd.REFLECTION_FILE, 200) == recs  # greedy: the same answers again

    # Other settings on the same directory stop with a one-line error (exit status 2).
    capfd.readouterr()
    assert launch("reflect", argv[:-6] + ["--max-new-tokens", "5", "--eval-batch-size", "40"]) == 2
    assert "other settings (generation differ)" in capfd.readouterr().err


def test_greedy_reflection_is_shared_across_seeds(processed: Path, tiny_models: dict, tmp_path: Path) -> None:
    """Greedy answers do not depend on the seed, so SRD runs of several training seeds reuse one reflection; sampled
    answers do, so there the seed is part of the settings."""
    def settings(*extra: str) -> dict:
        cfg, gen = srd.parse_reflect_args(_reflect_argv(tiny_models, processed, tmp_path / "srd") + list(extra))
        return srd.reflection_settings(cfg, gen, 200)

    assert settings("--seed", "1") == settings("--seed", "2")
    assert settings("--seed", "1", "--do-sample") != settings("--seed", "2", "--do-sample")


def test_reflection_settings_name_the_student_by_content(processed: Path, tiny_models: dict, tmp_path: Path) -> None:
    """A copy of the initial student (a study directory copied, a checkpoint moved) reuses the reflection; the same
    path holding retrained weights does not."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_models["gpt2"]["student"], copy)

    def settings(model: Path) -> dict:
        argv = _reflect_argv(tiny_models, processed, tmp_path / "srd")
        argv[argv.index("--model-path") + 1] = str(model)
        return srd.reflection_settings(*srd.parse_reflect_args(argv), 200)

    original = settings(tiny_models["gpt2"]["student"])
    assert settings(copy) == original
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert srd.settings_conflict(original, settings(copy)) == ["model_sha256"]


def test_two_rank_reflection_writes_every_ranks_losses(processed: Path, tiny_models: dict, tmp_path: Path,
                                                      subprocess_env: dict[str, str]) -> None:
    """Generation and scoring are sharded over ranks; the file rank 0 writes holds every example's loss — those
    computed on rank 1 too — each the student's loss on that example computed here in one process."""
    data, srd_dir, n = tmp_path / "data", tmp_path / "srd", 30
    srd.write_stage_data(processed, range(n), data, 0)  # a 30-example copy of the split
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO_ROOT / "tools" / "srd_reflect.py"), *_reflect_argv(tiny_models, data, srd_dir)],
                          env=subprocess_env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "to compute on 2 rank(s)" in proc.stdout
    recs = srd.load_reflection(srd_dir / srd.REFLECTION_FILE, n)
    from distill.models import load_model, load_tokenizer

    tok = load_tokenizer(str(tiny_models["gpt2"]["student"]))
    model = load_model(str(tiny_models["gpt2"]["student"])).eval()
    expected = srd.ground_truth_losses(model, InstructionDataset(data, "train"), range(n),
                                       LMCollator(tok.pad_token_id, tok.eos_token_id, 512), 16, torch.device("cpu"))
    assert [r["loss_tokens"] for r in recs] == [expected[i][1] for i in range(n)]
    assert all(r["loss"] == pytest.approx(expected[r["index"]][0], rel=1e-4) for r in recs)


# ----------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------
class Recorder:
    """A launcher that records what it starts and runs it in a forked child (or refuses to, with ``allow=False``)."""

    def __init__(self, allow: bool = True):
        self.calls: list[tuple[str, list[str]]] = []
        self.allow = allow
        self.fork = srd_run.ForkLauncher()

    def __call__(self, entry: str, argv: Sequence[str]) -> int:
        self.calls.append((entry, list(argv)))
        if not self.allow:
            raise AssertionError(f"unexpected launch of {entry}")
        return self.fork(entry, argv)


def last_value(argv: Sequence[str], flag: str) -> str:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag][-1]


def _run_argv(models: dict, data: Path, save: Path, *extra: str) -> list[str]:
    return ["--num-stages", "3", "--reflect-part-size", "10", "--srd-dir", str(save.parent / "srd"),
            "--model-path", str(models["gpt2"]["student"]), "--teacher-model-path", str(models["gpt2"]["teacher"]),
            "--data-dir", str(data), "--save", str(save), "--type", "tfkl", "--epochs", "1", "--batch-size", "16",
            "--max-new-tokens", "4", "--eval-batch-size", "4", "--dev-num", "2", "--report-to", "none",
            "--log-interval", "100", "--group-by-length", *extra]


def test_runner_end_to_end_resume_and_report(processed: Path, tiny_models: dict, tmp_path: Path) -> None:
    save = tmp_path / "run"
    # A schedule of its own per stage: kd-ratio, learning rate, its cosine's end.
    sched = ("--stage-kd-ratio", "0.3", "0.6", "--stage-lr", "1e-3", "--stage-lr-min", "1e-5")
    rec = Recorder()
    report = srd_run.run_srd(_run_argv(tiny_models, processed, save, *sched), launcher=rec)
    assert [c[0] for c in rec.calls] == ["reflect", "train", "train"]
    # The initial student reflects, as released: sampled at T = 0.01 (top-k 0, top-p 1), no repeated 6-gram.
    refl = rec.calls[0][1]
    assert last_value(refl, "--model-path") == str(tiny_models["gpt2"]["student"])
    assert (last_value(refl, "--temperature"), last_value(refl, "--top-k"), last_value(refl, "--no-repeat-ngram-size"),
            "--do-sample" in refl) == ("0.01", "0", "6", True)
    plan = json.loads((save / srd_run.PLAN_FILE).read_text())
    assert plan["settings"]["part_sizes"] == [67, 67, 66] and plan["settings"]["temperatures"] == [1.0, 2.0]
    assert [s["status"] for s in plan["stages"]] == ["done", "done"]
    # 67 and 134 examples at batch size 16, one epoch: 5 and 9 steps (the stages' run summaries say so).
    assert [s["total_iters"] for s in plan["stages"]] == [5, 9]

    # Stage data: the cumulative easiest 67 and 134 examples of the ranking.
    ranking = srd.read_jsonl(Path(plan["ranking"]))
    order = [r["index"] for r in ranking]
    for i, n in enumerate((67, 134)):
        meta = json.loads((Path(plan["stages"][i]["data_dir"]) / srd.STAGE_MARKER).read_text())
        assert meta["indices"] == order[:n]

    # Each stage got its data, temperature, schedule and, from stage 1 on, the previous stage's final checkpoint.
    s0, s1 = rec.calls[1][1], rec.calls[2][1]
    assert last_value(s0, "--model-path") == str(tiny_models["gpt2"]["student"])
    assert last_value(s1, "--model-path") == str(save / "stage_0" / "5")
    for i, argv in enumerate((s0, s1)):
        args = json.loads((save / f"stage_{i}" / "args.json").read_text())  # what the trainer actually used
        assert (args["temperature_kld"], args["kd_ratio"], args["lr"], args["lr_min"]) == ([1.0, 2.0][i],
                                                                                        [0.3, 0.6][i], 1e-3, 1e-5)
        assert args["data_dir"] == plan["stages"][i]["data_dir"]
        assert args["model_path"] == last_value(argv, "--model-path")
        assert "--resume" not in argv

    # Best checkpoint across stages, and the report: each stage's settings and what its run summary records, with
    # tokens checked against the trainer's collator, replayed.
    best = json.loads((save / "best.json").read_text())
    assert (save / "best").resolve() == Path(best["path"]).resolve()
    assert os.readlink(save / "best") == f"stage_{best['stage']}/{best['step']}"
    assert json.loads((save / srd_run.REPORT_FILE).read_text()) == json.loads(json.dumps(report))
    from distill.models import load_tokenizer
    from distill.trainer import MicroBatchStream

    tok = load_tokenizer(str(tiny_models["gpt2"]["student"]))
    for i, steps in enumerate((5, 9)):
        data = Path(plan["stages"][i]["data_dir"])
        train_set = InstructionDataset(data, "train")
        stream = MicroBatchStream(train_set, LMCollator(tok.pad_token_id, tok.eos_token_id, 512), 16, 10, 0, 1,
                                  lengths=train_set.data.sizes)  # as the trainer builds it with --group-by-length
        expected = sum(int(next(stream)["attention_mask"].sum()) for _ in range(steps))
        row = report["stages"][i]
        assert (row["examples"], row["steps"], row["tokens"], row["epochs"]) == ((67, 134)[i], steps, expected, 1.0)
        assert (row["kd_ratio"], row["lr"], row["temperature"]) == ([0.3, 0.6][i], 1e-3, [1.0, 2.0][i])
        assert 0 < row["train_seconds"] < row["wall_seconds"]
        assert row["rougeL_best"] is not None and row["rougeL_best"] >= row["rougeL_final"]
    assert report["total"]["tokens"] == sum(r["tokens"] for r in report["stages"])
    assert report["total"]["wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in report["stages"])
                                                            + report["reflection_wall_seconds"])
    assert best["value"] == max(r["rougeL_best"] for r in report["stages"])

    # Re-running the same command launches nothing.
    idle = Recorder(allow=False)
    srd_run.run_srd(_run_argv(tiny_models, processed, save, *sched), launcher=idle)
    assert idle.calls == []

    # Two epochs for stage 1: stage 0 is finished and skipped; stage 1 resumes from its step-9 checkpoint.
    rec2 = Recorder()
    srd_run.run_srd(_run_argv(tiny_models, processed, save, *sched, "--stage-epochs", "1", "2"), launcher=rec2)
    assert [c[0] for c in rec2.calls] == ["train"]
    argv = rec2.calls[0][1]
    assert "--resume" in argv and last_value(argv, "--save") == str(save / "stage_1")
    assert last_value(argv, "--model-path") == str(save / "stage_0" / "5")
    assert (save / "stage_1" / "18" / "trainer_state.json").is_file()
    assert "resumed from" in (save / "stage_1" / "log.txt").read_text()
    assert json.loads((save / srd_run.PLAN_FILE).read_text())["stages"][1]["total_iters"] == 18

    # --stratify-by category with the release's tie order: the same reflection, ranked within each category; every
    # category keeps its share.
    strat = tmp_path / "strat"
    rec3 = Recorder()
    srd_run.run_srd(_run_argv(tiny_models, processed, strat, "--stratify-by", "category", "--keep-stages", "1",
                              "--rank-ties", "stable"), launcher=rec3)
    assert [c[0] for c in rec3.calls] == ["train"]  # the reflection is shared
    plan = json.loads((strat / srd_run.PLAN_FILE).read_text())
    assert plan["settings"]["stratify_by"] == "category" and plan["ranking"].endswith(
        "rrf-n3-k60-stable-by-category/ranking.jsonl")
    cats = [json.loads(line)["category"] for line in (processed / "train.jsonl").read_text().splitlines()]
    stage0 = json.loads((Path(plan["stages"][0]["data_dir"]) / srd.STAGE_MARKER).read_text())["indices"]
    for c in set(cats):  # a category of n examples has ceil(n / 3) of them in the first part
        assert sum(cats[i] == c for i in stage0) == -(-cats.count(c) // 3)
    reflection = srd.load_reflection(save.parent / "srd" / srd.REFLECTION_FILE, len(cats))
    for c in set(cats):  # and they are its easiest by the fused rank within the category
        idx = [i for i in range(len(cats)) if cats[i] == c]
        ranked = srd.rank_examples([reflection[i]["rougeL"] for i in idx], [reflection[i]["loss"] for i in idx],
                                   ties="stable")
        assert {i for i in stage0 if cats[i] == c} == {idx[r["index"]] for r in ranked[: -(-len(idx) // 3)]}


def test_runner_refuses_bad_settings_before_any_work(processed: Path, tiny_models: dict, tmp_path: Path) -> None:
    save = tmp_path / "run"
    never = Recorder(allow=False)
    with pytest.raises(InputError, match="--stratify-by colour: record 1 .* has no colour value"):
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--stratify-by", "colour"), launcher=never)
    with pytest.raises(InputError, match="--type fkl ignores the KD temperature"):
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--type", "fkl"), launcher=never)
    with pytest.raises(InputError, match="--temperature-kld is set per stage"):
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--temperature-kld", "2"), launcher=never)
    with pytest.raises(InputError, match="--stage is the stage index, set by the runner"):
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--stage", "1"), launcher=never)
    with pytest.raises(InputError, match="one per trained stage"):
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--temperatures", "1", "2", "3"), launcher=never)
    with pytest.raises(InputError, match="--stage-kd-ratio has 3 values but 2 stages"):
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--stage-kd-ratio", "1", "1", "1"), launcher=never)
    with pytest.raises(InputError, match="lower --num-stages"):
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--num-stages", "201"), launcher=never)
    with pytest.raises(InputError, match="--stage-epochs has 3 values"):
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--stage-epochs", "1", "2", "3"), launcher=never)
    with pytest.raises(SystemExit):  # a typo in a pass-through flag: train_distill.py's parser stops it
        srd_run.run_srd(_run_argv(tiny_models, processed, save, "--epocs", "2"), launcher=never)
    assert not save.exists()


def test_flags_split_between_runner_and_training() -> None:
    cfg, rest = srd_run.split_argv(["--type", "ttvd", "--temperature", "0.7", "--num-stages", "5", "--lr=1e-4",
                                    "--temperatures", "1", "2", "3", "4", "--eval-gen", "--resume"])
    assert (cfg.num_stages, cfg.temperatures, cfg.trained_stages) == (5, [1.0, 2.0, 3.0, 4.0], 4)
    assert rest == ["--type", "ttvd", "--temperature", "0.7", "--lr=1e-4", "--eval-gen", "--resume"]
    assert srd_run.drop_flags(rest, srd_run.RESUME_FLAGS)[-1] == "--eval-gen"
    argv = srd_run.stage_argv(["--lr", "1"], stage=2, init="run/stage_1/9", data_dir="d2", save="run/stage_2",
                              schedule={"temperature": 1.5, "flags": {"--epochs": 3, "--kd-ratio": 0.9}}, resume=True,
                              peft_base="base", run_name="r-stage2")
    assert argv == ["--lr", "1", "--model-path", "base", "--peft-path", "run/stage_1/9", "--data-dir", "d2", "--save",
                    "run/stage_2", "--temperature-kld", "1.5", "--eval-gen", "--run-name", "r-stage2", "--stage", "2",
                    "--epochs", "3", "--kd-ratio", "0.9", "--resume"]
    assert srd_run.default_srd_dir("data/x", "results/a/run7/best") == Path("data/x/srd/run7")


def test_runner_launch_command_on_two_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    """--nnodes 2: every step's torchrun is this node's part of a 2-node run (its --node_rank, node 0's address, a
    port all nodes name alike); one node keeps the single-node command."""
    calls: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setattr(srd_run, "subprocess", types.SimpleNamespace(
        run=lambda cmd, env: calls.append((cmd, env)) or subprocess.CompletedProcess(cmd, 0)))
    monkeypatch.setenv("RANK", "3")  # a caller's own process-group variables stay out of the workers' environment
    cfg, _ = srd_run.split_argv(["--nnodes", "2", "--node-rank", "1", "--master-addr", "10.0.0.1",
                                 "--nproc-per-node", "4"])
    assert srd_run.make_launcher(cfg)("train", ["--lr", "1"]) == 0
    cmd, env = calls[-1]
    assert cmd == [sys.executable, "-m", "distill.launch", "--nnodes", "2", "--node_rank", "1",
                   "--nproc_per_node", "4", "--master_addr", "10.0.0.1", "--master_port", "29500",
                   str(REPO_ROOT / "train_distill.py"), "--lr", "1"]
    assert "RANK" not in env and env["OMP_NUM_THREADS"]
    cfg, _ = srd_run.split_argv(["--nnodes", "2", "--node-rank", "0", "--master-addr", "h0", "--master-port", "2"])
    assert srd_run.make_launcher(cfg)("reflect", [])  == 0
    assert calls[-1][0][3:13] == ["--nnodes", "2", "--node_rank", "0", "--nproc_per_node", "1", "--master_addr", "h0",
                                  "--master_port", "2"] and calls[-1][0][13].endswith("tools/srd_reflect.py")
    one = srd_run.make_launcher(srd_run.split_argv([])[0]).command("train", [])  # type: ignore[union-attr]
    assert one[3:9] == ["--nnodes", "1", "--nproc_per_node", "1", "--master_addr", "127.0.0.1"]
    assert "--node_rank" not in one and int(one[10]) > 0  # a free port per launch
    for bad in (["--nnodes", "2"], ["--nnodes", "2", "--master-addr", "h0", "--node-rank", "2"],
                ["--nnodes", "2", "--master-addr", "h0", "--launcher", "fork"]):
        with pytest.raises(SystemExit):
            srd_run.split_argv(bad)


def test_runner_on_two_nodes_node0_writes_and_node1_waits(processed: Path, tiny_models: dict, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Node 0's and node 1's runners, in two threads on one directory (a shared filesystem). Their launchers stand
    in for the steps: both meet at a barrier, as torchrun's rendezvous starts a step on all nodes together; node 1's
    part returns at once, node 0's writes what the step writes (reflection, checkpoints) a moment later, as its rank 0
    does. Node 1 must launch the same steps with the same flags, read node 0's files only once they are complete, and
    write nothing itself."""
    save, srd_dir = tmp_path / "run", tmp_path / "srd"
    monkeypatch.setattr(srd_run, "WAIT_POLL", 0.05)
    # A stand-in reflection (the real one is tested above): deterministic scores, complete once node 0 "wrote" it.
    n = len(IndexedDataset(processed / "train_0"))
    scores = [{"index": i, "rougeL": float(i * 37 % 101), "loss": i * 53 % 97 / 10, "loss_tokens": 5} for i in range(n)]
    monkeypatch.setattr(srd, "reflection_is_complete", lambda d, settings: (Path(d) / "reflected").is_file())
    monkeypatch.setattr(srd, "load_reflection", lambda path, num: scores)
    writers: list[str] = []
    for name in ("write_json_atomic", "write_stage_data", "write_ranking"):
        def recording(*a: Any, _real=getattr(srd, name), **k: Any) -> Any:
            writers.append(threading.current_thread().name)
            return _real(*a, **k)
        monkeypatch.setattr(srd, name, recording)

    rendezvous = threading.Barrier(2, timeout=60)
    calls: dict[int, list[tuple[str, list[str]]]] = {0: [], 1: []}

    def launcher(node: int):
        def launch(entry: str, argv: Sequence[str]) -> int:
            calls[node].append((entry, list(argv)))
            if entry == "train":  # what every rank loads: the stage data and the previous stage's final checkpoint
                assert (Path(last_value(argv, "--data-dir")) / srd.STAGE_MARKER).is_file()
                assert (Path(last_value(argv, "--model-path")) / "config.json").is_file()
            rendezvous.wait()
            if node == 0:
                time.sleep(0.3)  # node 1's part has returned; node 0's rank 0 is still writing
                if entry == "reflect":
                    srd_dir.mkdir(parents=True, exist_ok=True)
                    (srd_dir / "reflected").write_text("")
                else:
                    run, steps = Path(last_value(argv, "--save")), int(last_value(argv, "--total-iters"))
                    shutil.copytree(tiny_models["gpt2"]["student"], run / str(steps))
                    (run / str(steps) / "trainer_state.json").write_text("{}")
                    # Last, as the trainer writes it: the run summary.
                    (run / "run_summary.json").write_text(json.dumps({
                        "steps": steps, "total_iters": steps, "steps_per_epoch": steps,
                        "best": {"step": steps, "metric": "valid/rougeL", "value": 10.0}}))
            return 0
        return launch

    results: dict[int, Any] = {}

    def node(rank: int) -> None:
        try:
            results[rank] = srd_run.run_srd(
                _run_argv(tiny_models, processed, save, "--stage-iters", "3", "--baseline-dir", str(tmp_path / "no"),
                          "--nnodes", "2", "--node-rank", str(rank), "--master-addr", "127.0.0.1"),
                launcher=launcher(rank))
        except BaseException as e:  # the other node must not wait at the barrier for a node that is gone
            results[rank] = e
            rendezvous.abort()

    threads = [threading.Thread(target=node, args=(r,), name=f"node{r}") for r in (1, 0)]  # node 1 first: it waits
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(isinstance(r, BaseException) for r in results.values()), results
    assert [c[0] for c in calls[0]] == ["reflect", "train", "train"] and calls[1] == calls[0]
    assert last_value(calls[1][2][1], "--model-path") == str(save / "stage_0" / "3")  # node 0's final checkpoint
    assert set(writers) == {"node0"}
    assert results[1]["node_rank"] == 1 and [s["status"] for s in results[1]["stages"]] == ["done", "done"]
    plan = json.loads((save / srd_run.PLAN_FILE).read_text())
    assert plan["reflection"]["status"] == "done" and [s["status"] for s in plan["stages"]] == ["done", "done"]
    assert results[0]["best"]["step"] == 3 and (save / srd_run.REPORT_FILE).is_file()


# ----------------------------------------------------------------------------------------------------------------
# Launch scripts
# ----------------------------------------------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[1]
PAIRS = {"gpt2": ("scripts/gpt2/srd/train_0.1B_1.5B.sh", "gpt2-base", "gpt2-xlarge"),
         "opt": ("scripts/opt/srd/train_0.1B_2.7B.sh", "opt-125M", "opt-2.7B"),
         "llama": ("scripts/llama/srd/train_3B_7B.sh", "openllama2-3B", "openllama2-7B"),
         "qwen2": ("scripts/qwen2/srd/train_0.5B_1.5B.sh", "qwen2-0.5B", "qwen2-1.5B")}


@pytest.mark.parametrize("family", sorted(PAIRS))
def test_srd_script_routes_every_flag(family: str, tiny_models: dict, processed_tiny_root: Path, tmp_path: Path,
                                      subprocess_env: dict[str, str]) -> None:
    script, student, teacher = PAIRS[family]
    stub, argv_file = tmp_path / "python-stub", tmp_path / "argv"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_FILE"\n')
    stub.chmod(0o755)
    data = processed_tiny_root / "synth" / "full" / family
    env = {**subprocess_env, "PYTHON": str(stub), "ARGV_FILE": str(argv_file), "GPUS_PER_NODE": "1",
           "MASTER_PORT": "29999", "CKPT": str(tiny_models[family]["student"]),
           "TEACHER_CKPT": str(tiny_models[family]["teacher"]), "DATA_DIR": str(data),
           # the hardware probe's answer as scripts/lib.sh exports it, for a machine with native bf16
           "DISTILL_HW_FOR": "auto", "NUM_GPUS": "0", "PRECISION_RESOLVED": "bf16", "PRECISION_INFO": "test"}

    def recorded(*flags: str) -> tuple[Any, Any]:
        proc = subprocess.run(["bash", script, *flags], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        argv = argv_file.read_text().split("\0")[:-1]
        assert argv[0] == "tools/srd_run.py"
        cfg, rest = srd_run.split_argv(argv[1:])
        return cfg, srd_run.parse_train_argv(rest)

    cfg, args = recorded()
    assert (cfg.num_stages, cfg.rank_by, cfg.rrf_k, cfg.trained_stages, cfg.stage_init) == (4, "rrf", 60.0, 3, "last")
    assert (cfg.nproc_per_node, cfg.master_port, cfg.srd_dir) == (1, 29999, f"{data}/srd/{student}")
    assert args.distill.type == "tfkl" and args.train.eval_gen and not args.train.group_by_length
    # The release's recipe (the GPT-2 one where it has none for the family; its own for OpenLLaMA).
    recipe = {"llama": (1e-4, 2, 4, 4, [0.7, 0.8, 0.9], [1.0, 1.33, 1.67])}.get(
        family, (1e-4, 16, 1, 8, [0.8, 0.9, 1.0], [1.0, 1.5, 2.0]))
    assert (args.train.lr, args.train.batch_size, args.train.gradient_accumulation_steps, args.train.epochs,
            cfg.stage_kd_ratio, cfg.temperatures) == recipe
    assert (args.train.lr_schedule, args.train.lr_min, args.train.warmup_iters) == ("cosine", 1e-7, 0)
    assert (args.train.eval_interval, args.train.save_interval) == (-1, -1)  # every epoch
    assert (args.gen.do_sample, args.gen.temperature, args.gen.top_k, args.gen.top_p) == (True, 1.0, 0, 1.0)
    assert (cfg.rank_ties, cfg.reflect_temperature, cfg.reflect_no_repeat_ngram_size) == ("stable", 0.01, 6)
    assert (args.model.peft, args.model.peft_lora_r, args.model.peft_lora_alpha) == (
        ("lora", 16, 64) if family == "llama" else (None, 8, 32))
    assert args.train.save == f"{REPO_ROOT}/results/{family}/train/srd/{student}-{teacher}-tfkl"
    assert cfg.baseline_dir == f"{REPO_ROOT}/results/{family}/train/kd/{student}-{teacher}-tfkl"
    assert args.model.model_path == str(tiny_models[family]["student"])
    # The teacher runs in the resolved precision (bf16 here), the student's DeepSpeed config follows it too.
    assert args.distill.teacher_model_bf16 and not args.distill.teacher_model_fp16
    stage = 2 if family == "llama" else 1
    assert args.train.deepspeed_config.endswith(f"ds_config_zero{stage}_bf16.json")
    if family == "llama":
        assert args.distill.teacher_peft_path == "results/llama/train/sft/openllama2-7B/best"

    # Flags given to the script win and reach the right tool; the type names the output and the baseline.
    cfg, args = recorded("--type", "ttvd", "--num-stages", "5", "--temperatures", "1", "2", "2", "3", "--lr", "3e-5",
                         "--stage-epochs", "2", "--stage-kd-ratio", "0.5", "--no-do-sample", "--rank-ties", "average")
    assert (cfg.num_stages, cfg.temperatures, cfg.stage_epochs, cfg.stage_kd_ratio) == (5, [1.0, 2.0, 2.0, 3.0], [2],
                                                                                       [0.5])
    assert (args.distill.type, args.train.lr, args.gen.do_sample, cfg.rank_ties) == ("ttvd", 3e-5, False, "average")
    assert args.train.save.endswith(f"/srd/{student}-{teacher}-ttvd") and cfg.baseline_dir.endswith(f"-{teacher}-ttvd")
    # One kd-ratio or temperature schedule for all stages leaves the recipe's lists out (they would override it).
    cfg, args = recorded("--kd-ratio", "0.4", "--temperature-start", "1", "--temperature-end", "3")
    assert (cfg.stage_kd_ratio, cfg.temperatures, args.distill.kd_ratio, cfg.temperature_end) == (None, None, 0.4, 3.0)
    env.update(KD_RATIO="0.6")
    assert recorded()[0].stage_kd_ratio is None and recorded()[1].distill.kd_ratio == 0.6
    env.update(KD_RATIO="", KD_RATIOS="0.1 0.2 0.3", TEMPERATURES="2", LR="3e-4", LR_MIN="0", EVAL_INTERVAL="50")
    cfg, args = recorded()
    assert (cfg.stage_kd_ratio, cfg.temperatures, args.train.lr, args.train.lr_min, args.train.eval_interval) == (
        [0.1, 0.2, 0.3], [2.0], 3e-4, 0.0, 50)
    # The recipe's three values per stage do not fit another number of stages: one line says so before any work.
    cfg, _ = recorded("--keep-stages", "4")
    with pytest.raises(InputError, match="has 3 values but 4 stages are trained"):
        srd_plan.stage_schedules(cfg, cfg.trained_stages)
    for var in ("KD_RATIOS", "TEMPERATURES", "LR", "LR_MIN", "EVAL_INTERVAL"):
        del env[var]

    env["CKPT"] = str(tmp_path / "absent")
    proc = subprocess.run(["bash", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and f"missing {tmp_path / 'absent'}" in proc.stderr


def test_srd_script_on_several_nodes(tiny_models: dict, processed_tiny_root: Path, tmp_path: Path,
                                     subprocess_env: dict[str, str]) -> None:
    """NNODES > 1: the script hands the node settings to the runner (which starts each step's torchrun on this node
    with them) and pins the port, so every node's runner uses the same one; without MASTER_ADDR, or with HOSTFILE,
    it stops with one line."""
    script = PAIRS["gpt2"][0]
    stub, argv_file = tmp_path / "python-stub", tmp_path / "argv"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\0" "$@" > "$ARGV_FILE"\n')
    stub.chmod(0o755)
    env = {**subprocess_env, "PYTHON": str(stub), "ARGV_FILE": str(argv_file), "GPUS_PER_NODE": "2",
           "CKPT": str(tiny_models["gpt2"]["student"]), "TEACHER_CKPT": str(tiny_models["gpt2"]["teacher"]),
           "DATA_DIR": str(processed_tiny_root / "synth" / "full" / "gpt2"), "NNODES": "2", "NODE_RANK": "1",
           "MASTER_ADDR": "10.0.0.1"}

    def run(**overrides: str) -> subprocess.CompletedProcess:
        argv_file.unlink(missing_ok=True)
        return subprocess.run(["bash", script], cwd=REPO_ROOT, env={**env, **overrides}, capture_output=True,
                              text=True, timeout=60)

    proc = run()
    assert proc.returncode == 0, proc.stderr
    argv = argv_file.read_text().split("\0")[:-1]
    cfg, rest = srd_run.split_argv(argv[1:])
    assert (cfg.nnodes, cfg.node_rank, cfg.master_addr, cfg.master_port, cfg.nproc_per_node) == (2, 1, "10.0.0.1",
                                                                                               29500, 2)
    assert srd_run.parse_train_argv(rest).train.save.endswith("/srd/gpt2-base-gpt2-xlarge-tfkl")
    proc = run(MASTER_PORT="29999")
    assert proc.returncode == 0 and srd_run.split_argv(argv_file.read_text().split("\0")[1:-1])[0].master_port == 29999
    for overrides, needle in (({"MASTER_ADDR": ""}, "MASTER_ADDR"), ({"NODE_RANK": "2"}, "NODE_RANK=2"),
                              ({"HOSTFILE": str(tmp_path / "hosts")}, "HOSTFILE")):
        proc = run(**overrides)
        assert proc.returncode != 0 and not argv_file.exists() and needle in proc.stderr, proc.stderr
        assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1
