#!/usr/bin/env python
"""SRD end to end (reflection, ranking, stage data, curriculum KD stages, best checkpoint, report): the command line
of distill/srd_runner.py. ``python tools/srd_run.py --help`` lists its flags; see docs/srd.md."""
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/srd_run.py`: make the repo's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from distill import srd_runner  # noqa: E402

main = srd_runner.main

if __name__ == "__main__":
    main()
else:  # imported as tools.srd_run (older callers): the library module itself, so its names are the library's
    sys.modules[__name__] = srd_runner
