"""Data path: raw JSONL -> prompt templates -> tokenized, memory-mapped indexed binaries -> torch datasets."""

import distill  # noqa: E402,F401  (sets the CPU OpenMP wait policy before torch loads; see distill/__init__.py)
