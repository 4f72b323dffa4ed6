#!/usr/bin/env python
"""SeqKD data: a teacher answers every prompt of a processed split; the student is then fine-tuned on its answers.

    python tools/generate_data.py --model-path results/gpt2/train/sft/gpt2-xlarge/best \\
        --data-dir processed_data/dolly/full/gpt2 --save data/dolly_seqkd/gpt2-xlarge --do-sample
    torchrun --nproc_per_node 8 tools/generate_data.py ...        # the prompts are sharded over the ranks

A thin command line over distill/seqkd.py (output format, resuming, settings: its docstring and docs/seqkd.md).
"""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/generate_data.py`: make the repo's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from distill.seqkd import main  # noqa: E402  (torch-free at import: --help answers at once)

if __name__ == "__main__":
    main()
