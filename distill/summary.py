"""What a finished training run did, machine-readable, and the one rule that picks its best checkpoint.

``<save>/run_summary.json`` is written by the trainer (rank 0) when a run finishes, atomically; a resumed run's
summary covers all its launches (the counters live in the checkpoint). Whoever reads a run — the SRD stage plan,
the studies, a user's script — reads this file instead of parsing log text or replaying data streams:

    {"steps": 120, "total_iters": 120, "epochs": 3.0, "world_size": 2, "train_seconds": 81.2,
     "tokens": 401234, "examples_seen": 1920, "train_examples": 640, "launches": 2,
     "best": {"step": 80, "metric": "valid/rougeL", "value": 23.1, "path": ".../80"}, "final": {...}}

Torch-free, so a runner's ``--help`` and its planning import nothing heavy.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Optional

RUN_SUMMARY = "run_summary.json"


def best_key(metrics: Mapping[str, float]) -> tuple[str, bool]:
    """(the metric checkpoints are picked by, whether higher is better): Rouge-L when generation was scored, else
    the validation loss."""
    return ("valid/rougeL", True) if "valid/rougeL" in metrics else ("valid/loss", False)


def is_better(candidate: Mapping[str, Any], best: Optional[Mapping[str, Any]]) -> bool:
    """Whether ``candidate`` (``{"metric", "value", ...}``) replaces ``best``: a finite value that beats it on the
    same metric, strictly (ties keep the earlier checkpoint); a change of metric (e.g. generation switched on)
    starts over. A non-finite value never wins (NaN compares false both ways)."""
    value = float(candidate["value"])
    if not math.isfinite(value):
        return False
    if not best or best.get("metric") != candidate["metric"]:
        return True
    higher = candidate["metric"] in ("valid/rougeL", "valid/exact_match")
    return value > best["value"] if higher else value < best["value"]


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def write_summary(save_dir: Path, summary: Mapping[str, Any]) -> None:
    write_json_atomic(Path(save_dir) / RUN_SUMMARY, dict(summary))


def read_summary(run: Path) -> Optional[dict[str, Any]]:
    """The run's summary, or None when it has none (not finished, or made before summaries existed)."""
    path = Path(run) / RUN_SUMMARY
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
