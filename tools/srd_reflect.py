#!/usr/bin/env python
"""SRD reflection: the initial student answers every training prompt and is scored on it.

    python tools/srd_reflect.py --model-path checkpoints/gpt2-base --data-dir processed_data/dolly/full/gpt2 \\
        --srd-dir processed_data/dolly/full/gpt2/srd/gpt2-base [--max-new-tokens 256] [--dtype bf16]
    torchrun --nproc_per_node 8 tools/srd_reflect.py ...          # generation and scoring are sharded over ranks

Writes ``<srd-dir>/reflection.jsonl``, one record per training example in order: ``index``, ``rougeL`` (0..100, the
student's answer against the references), ``loss`` (the student's mean token cross-entropy on the ground-truth
response; null when truncation left no target token), ``response``, ``num_tokens``, ``loss_tokens``. Resumable: the
work is done in parts of ``--part-size`` examples (``<srd-dir>/reflection_parts/part_XXXXX.jsonl``, each written
atomically, with the settings in ``settings.json``); a restart with the same settings skips finished parts, other
settings stop with an error. Decoding is greedy unless ``--do-sample`` (``--temperature``, ``--top-p``, ``--top-k``,
``--no-repeat-ngram-size``). Normally started by ``tools/srd_run.py``, which samples at the release's temperature 0.01
with ``--no-repeat-ngram-size 6``; see docs/srd.md. The command line of :func:`distill.srd.reflect_main`.
"""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/srd_reflect.py`: make the repo's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from distill.srd import reflect_main  # noqa: E402

if __name__ == "__main__":
    reflect_main()
