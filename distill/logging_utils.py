"""Run logging on the main rank: a rich progress bar on a terminal, time-based progress lines (step/total, loss,
lr, tokens/s, ETA, every ``--progress-interval`` seconds) in the plain log file ``<save>/log.txt`` and, when stdout is
not a terminal, on stdout; metrics as JSON lines (``<save>/metrics.jsonl``, one row per step and kind — a resumed run
first drops the rows of the steps it redoes), and TensorBoard or Weights & Biases."""
from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Mapping, Optional

from distill.config import TrainConfig
from distill.progress import DEFAULT_INTERVAL, Progress as ProgressLines, stamped


class RunLogger:
    def __init__(self, save_dir: Path, cfg: TrainConfig, enabled: bool, config: Optional[Mapping[str, Any]] = None,
                 progress_interval: float = DEFAULT_INTERVAL):
        self.enabled = enabled
        self.save_dir = save_dir
        self.progress_interval = progress_interval
        self.lines: Optional[ProgressLines] = None  # the time-based progress lines
        self._lock = threading.Lock()  # info() is also called from the progress thread
        self.progress: Any = None
        self.task: Any = None
        self.tb: Any = None
        self.wandb: Any = None
        if not enabled:
            return
        save_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = open(save_dir / "log.txt", "a", encoding="utf-8")
        self.metrics_file = open(save_dir / "metrics.jsonl", "a", encoding="utf-8")
        if config is not None:
            # Atomically: a resumed run compares its settings with these (distill/rundir.py), so a kill mid-write
            # must not leave half a file.
            tmp = save_dir / "args.json.tmp"
            tmp.write_text(json.dumps(dict(config), indent=2, default=str))
            os.replace(tmp, save_dir / "args.json")
        name = cfg.run_name or save_dir.name
        if cfg.report_to == "tensorboard":
            self.tb = self._tensorboard()
        elif cfg.report_to == "wandb":
            try:
                import wandb
            except ImportError as e:
                raise ImportError("--report-to wandb: the wandb package is not installed (pip install wandb)") from e
            self.wandb = wandb.init(project=cfg.wandb_project, name=name, config=dict(config or {}),
                                    dir=str(save_dir))

    def _tensorboard(self, purge_step: Optional[int] = None) -> Any:
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.save_dir / "runs"), purge_step=purge_step)

    def rewind(self, step: int) -> None:
        """The run continues from its checkpoint at ``step`` (0: from scratch): what the steps after it logged is
        lost work that is about to be redone, so its rows leave metrics.jsonl (rewritten atomically; a row a kill
        cut short goes too) and TensorBoard purges its events — each step is logged once, as in an uninterrupted
        run."""
        if not self.enabled:
            return
        path = self.save_dir / "metrics.jsonl"
        with self._lock:
            self.metrics_file.close()
            kept = []
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
                    kept.append(line + "\n")
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(kept), encoding="utf-8")
            os.replace(tmp, path)
            self.metrics_file = open(path, "a", encoding="utf-8")
        if self.tb is not None:
            self.tb.close()
            self.tb = self._tensorboard(purge_step=step + 1)

    def info(self, msg: str) -> None:
        if not self.enabled:
            return
        self._write(msg, to_stdout=True)

    def log_only(self, msg: str) -> None:
        """Into log.txt only: a line the console already has (e.g. a warning printed before the models loaded)."""
        if self.enabled:
            self._write(msg, to_stdout=False)

    def _write(self, msg: str, to_stdout: bool) -> None:
        line = stamped(msg)
        with self._lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()
            if not to_stdout:
                return
            if self.progress is not None and self.progress.live.is_started and sys.stdout.isatty():
                self.progress.console.print(line, highlight=False, markup=False, soft_wrap=True)
            else:
                print(line, flush=True)

    def _progress_line(self, line: str) -> None:
        # On a terminal the live bar already shows it; elsewhere (a file, a pipe) the line is the only sign of life.
        self._write(line, to_stdout=not sys.stdout.isatty())

    def start(self, total: int, done: int) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
            TimeRemainingColumn

        # A live bar only on a terminal; redirected output gets the plain log lines instead.
        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                 TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[stats]}"),
                                 disable=not sys.stdout.isatty(), refresh_per_second=4)
        self.task = self.progress.add_task("train", total=total, completed=done, stats="")
        self.progress.start()
        self.lines = ProgressLines("train", total, self._progress_line, self.progress_interval, done=done).start()

    def advance(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        if self.enabled and self.progress is not None:
            stats = f"loss {loss:.4f} | lr {lr:.2e} | {tokens_per_s:,.0f} tok/s"
            self.progress.update(self.task, completed=step, stats=stats)
            if self.lines is not None:
                self.lines.update(step, stats, note="")

    def note(self, text: str) -> None:
        """What the run is doing between steps (evaluating, generating k/n, saving), shown in the progress line."""
        if self.enabled and self.lines is not None:
            self.lines.update(note=text)

    def log_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        self.metrics_file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.metrics_file.flush()
        shown = " | ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self.info(f"step {step}: {shown}")
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(k, v, step)
            self.tb.flush()
        if self.wandb is not None:
            self.wandb.log(dict(metrics), step=step)

    def stop_progress(self) -> None:
        """Ends the progress bar and the progress-line thread; also when a run stops with an error, so a run inside a
        longer-lived process (a test, a notebook) leaves no thread printing after it."""
        if self.lines is not None:
            self.lines.stop()
            self.lines = None
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def finish(self, summary: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.stop_progress()
        self.info("done: " + json.dumps(summary, default=str))
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        self.log_file.close()
        self.metrics_file.close()
