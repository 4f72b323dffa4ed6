"""Data path: raw JSONL -> prompt templates -> tokenized, memory-mapped indexed binaries -> torch datasets."""
