#!/usr/bin/env python
"""SRD end to end (reflection, ranking, stage data, curriculum KD stages, best checkpoint, report): the command line
of distill/srd_runner.py. ``python tools/srd_run.py --help`` lists its flags; see docs/srd.md."""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/srd_run.py`: make the repo's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from distill.srd_runner import main  # noqa: E402

if __name__ == "__main__":
    main()
