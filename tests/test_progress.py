"""distill/progress.py: time-based progress lines, with a hand-driven clock."""
from __future__ import annotations

import time

import pytest

from distill.progress import Progress, format_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_comes_once_per_interval_with_done_total_stats_and_eta() -> None:
    clock, lines = Clock(), []
    p = Progress("train", 100, lines.append, interval=30.0, done=20, clock=clock)
    p.update(30, "loss 2.5000")
    clock.now += 29.0
    assert not p.tick() and lines == []  # not yet 30 s
    clock.now += 1.0
    assert p.tick()
    # 10 steps in 30 s since the start (which was at step 20): 70 left -> 210 s.
    assert lines == ["train 30/100 (30%) | loss 2.5000 | 30s elapsed | ETA 3m30s"]
    assert not p.tick()  # the next one is 30 s after this one
    p.update(note="evaluating: generated 10/50 prompts")
    clock.now += 45.0
    assert p.tick()
    assert lines[-1] == "train 30/100 (30%) | loss 2.5000 | 1m15s elapsed | ETA 8m45s | evaluating: generated 10/50 prompts"


def test_no_eta_before_any_progress() -> None:
    clock, lines = Clock(), []
    p = Progress("reflection parts: examples", 5000, lines.append, interval=1.0, clock=clock)
    clock.now += 2.0
    p.tick()
    assert lines == ["reflection parts: examples 0/5000 (0%) | 2s elapsed"]


def test_the_heartbeat_thread_writes_while_the_caller_is_busy() -> None:
    lines: list[str] = []
    with Progress("work", 3, lines.append, interval=0.2):
        time.sleep(0.7)  # one long "step": no update at all
    assert len(lines) >= 2 and all(line.startswith("work 0/3") for line in lines)


def test_format_seconds_and_bad_interval() -> None:
    assert [format_seconds(s) for s in (0, 59.6, 61, 3600 + 62)] == ["0s", "1m00s", "1m01s", "1h01m02s"]
    with pytest.raises(ValueError, match="interval"):
        Progress("x", 1, print, interval=0)


# ------------------------------------------------------------------------------------------------------------------
# A training run with its output in a file


@pytest.mark.usefixtures("in_process")
def test_a_run_writing_to_a_file_shows_progress_within_the_interval_even_with_slow_steps(
        tiny_models: dict, processed_tiny, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import contextlib
    import re
    from datetime import datetime

    import train_sft
    from distill.trainer import Trainer
    from tests.conftest import tiny_train_args

    slow = 0.6  # seconds per step, longer than half the interval: step-based logging alone would say little
    real_step = Trainer.train_step

    def slow_step(self):  # type: ignore[no-untyped-def]
        time.sleep(slow)
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", slow_step)
    save, out = tmp_path / "run", tmp_path / "stdout.txt"
    with open(out, "w", encoding="utf-8") as f, contextlib.redirect_stdout(f):
        train_sft.main(tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, save, "--total-iters", "8",
                                       "--log-interval", "100", "--progress-interval", "1", "--dev-num", "4",
                                       "--eval-batch-size", "4"))
    pattern = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] train (\d+)/8 \(\d+%\) \| loss [\d.]+ \| lr \S+ \| "
                         r"[\d,]+ tok/s \| \d+s elapsed( \| ETA \d+s)?")
    for source in (out, save / "log.txt"):
        text = source.read_text(encoding="utf-8")
        lines = [m for m in map(pattern.match, text.splitlines()) if m]
        assert len(lines) >= 3, text  # ~5 s of slow steps, one line a second
        stamps = [datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") for m in lines]
        # The first line comes within the interval of the loop's start, then one per interval (1 s stamps).
        assert all((b - a).total_seconds() <= 2 for a, b in zip(stamps, stamps[1:])), stamps
        assert [int(m.group(2)) for m in lines] == sorted(int(m.group(2)) for m in lines)  # steps only advance
