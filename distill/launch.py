"""``torchrun`` that passes a rank's exit code through: ``python -m distill.launch [torchrun flags] FILE ARGS``.

Plain torchrun turns any failed rank into its own ``ChildFailedError`` traceback and failure report (~35 lines after
the rank's one-line ``error: ...``) and exit status 1, so a bad input (exit status 2) or a diverged run (3) reads
like a crash. This wrapper runs the same launcher — torchrun's own argument parser and ``run`` — and when a rank
fails prints one line, ``error: rank N exited with code C; its message is above``, and exits with that rank's code
(the first rank to fail; 128 + N for a rank killed by signal N, as a shell reports it). Its flags, rendezvous,
environment and signal handling are torchrun's; only the failure report differs:

* torchrun's ``main`` is wrapped in ``@record``, which dumps a failing rank's error file and lets the exception reach
  the interpreter (the traceback and the report); ``run`` is called here instead, without it.
* the elastic agent logs a failure once more ("failed (exitcode: ...)") and each rank it stops after the first
  failure ("Sending process ... closing signal"): those two records are dropped; every other record is kept.

DeepSpeed's launcher (``HOSTFILE``, scripts/lib.sh) needs no wrapper: its per-node launcher exits with the failing
rank's code (logging one line, "... exits with return code = C") and its runner returns pdsh's, the largest of the
nodes' codes (``pdsh -S``).
"""
from __future__ import annotations

import logging
import signal
import sys
from typing import Optional, Sequence

#: Messages of torch.distributed.elastic.multiprocessing.api that repeat what the rank and this wrapper say.
_REPEATS = ("failed (exitcode", "Sending process")


class _DropRepeats(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(_REPEATS))


def failure_line(rank: int, exitcode: int) -> tuple[str, int]:
    """(the one line for a failed rank, the exit status to pass on)."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"error: rank {rank} was killed by {name}{hint}", 128 - exitcode
    return f"error: rank {rank} exited with code {exitcode}; its message is above", exitcode


def main(argv: Optional[Sequence[str]] = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic.multiprocessing.api").addFilter(_DropRepeats())
    args = torchrun.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        torchrun.run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        line, code = failure_line(rank, failure.exitcode)
        print(line, file=sys.stderr, flush=True)
        return code or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
