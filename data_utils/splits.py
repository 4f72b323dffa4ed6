"""Where a processed split's files are, and the check that they exist — stdlib only, so entry points can check their
inputs before torch loads."""
from __future__ import annotations

from pathlib import Path


def split_prefix(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / f"{split}_0"


def require_split(data_dir: str | Path, split: str) -> Path:
    prefix = split_prefix(data_dir, split)
    for suffix in (".bin", ".idx"):
        if not prefix.with_suffix(suffix).exists():
            raise FileNotFoundError(
                f"{prefix}{suffix} not found: process the data first "
                f"(bash scripts/<family>/tools/process_data_dolly.sh, or python tools/process_data_dolly.py)")
    return prefix
