"""Time-based progress lines, for output that is not a terminal (CI logs, ``nohup``, cluster job files).

A rich bar redraws in place and shows nothing useful in a file; step-based log lines can be minutes apart when steps
are slow. ``Progress`` keeps the latest state (done/total, a few numbers, what is happening now) and a heartbeat
thread writes it as one line every ``interval`` seconds — also while one step, an evaluation or a save takes longer
than that — with the elapsed time and an ETA from the rate since the start:

    train 150/628 (24%) | loss 2.41 | lr 9.1e-04 | 1,480 tok/s | 1m33s elapsed | ETA 4m56s

Updating is cheap (a lock and a few assignments), so callers update after every step or batch.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Optional

DEFAULT_INTERVAL = 30.0


def stamped(line: str) -> str:
    """``[YYYY-mm-dd HH:MM:SS] line``: the form of every log and progress line."""
    return f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {line}"


def print_stamped(line: str) -> None:
    print(stamped(line), flush=True)


def format_seconds(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Progress:
    """Progress of ``total`` units of work labelled ``label``; ``emit(line)`` writes a line wherever it should go."""

    def __init__(self, label: str, total: int, emit: Callable[[str], None], interval: float = DEFAULT_INTERVAL,
                 done: int = 0, clock: Callable[[], float] = time.monotonic):
        if interval <= 0:
            raise ValueError(f"progress interval must be > 0 seconds, got {interval}")
        self.label, self.total, self.emit, self.interval, self.clock = label, total, emit, interval, clock
        self.done = self.done_at_start = done
        self.stats = ""
        self.note = ""
        self.started = self.last_emit = clock()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------------------------------------------ state ---
    def update(self, done: Optional[int] = None, stats: Optional[str] = None, note: Optional[str] = None) -> None:
        with self._lock:
            if done is not None:
                self.done = done
            if stats is not None:
                self.stats = stats
            if note is not None:
                self.note = note

    def line(self) -> str:
        with self._lock:
            done, total, stats, note = self.done, self.total, self.stats, self.note
        elapsed = self.clock() - self.started
        parts = [f"{self.label} {done}/{total}" + (f" ({100 * done / total:.0f}%)" if total else "")]
        if stats:
            parts.append(stats)
        parts.append(f"{format_seconds(elapsed)} elapsed")
        new = done - self.done_at_start
        if new > 0 and total:
            parts.append(f"ETA {format_seconds(elapsed / new * max(total - done, 0))}")
        if note:
            parts.append(note)
        return " | ".join(parts)

    # ------------------------------------------------------------------------------------------------ heartbeat ---
    def tick(self) -> bool:
        """Emits a line if ``interval`` seconds have passed since the last one; True when it did."""
        now = self.clock()
        if now - self.last_emit < self.interval:
            return False
        self.last_emit = now
        self.emit(self.line())
        return True

    def start(self) -> "Progress":
        def beat() -> None:
            # Wake often enough that a line is never much later than `interval`, rarely enough to cost nothing.
            while not self._stop.wait(min(self.interval / 4, 1.0)):
                self.tick()

        self._thread = threading.Thread(target=beat, name=f"progress-{self.label}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> "Progress":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
