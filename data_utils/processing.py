"""What the processing tools share (``tools/process_data_dolly.py``, ``tools/process_data_pretrain.py``).

* the tokenizer: checked, loaded, the output's model type resolved (:func:`open_tokenizer`), and a pool of worker
  processes that each load it once (:func:`tokenizer_pool`, :func:`worker_tokenizer`);
* the common command-line arguments and their defaults (:func:`add_common_args`, :func:`fill_output_default`);
* the atomic output directory with its ``meta.json``: everything is written into a temporary directory next to the
  final one, which is moved into place at the end, replacing an earlier output, so a failed run leaves nothing behind
  (:func:`write_output_dir`, on :func:`data_utils.atomic.build_dir`);
* the command-line wrapper that turns bad input into one line on stderr and exit code 2 (:func:`run_cli`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from data_utils.atomic import build_dir

MODEL_HINT = "python tools/make_tiny_models.py"


class DataError(ValueError):
    """Bad input or arguments; the message is one line that names the input and the fix."""


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer


def require_model_path(model_path: Path) -> None:
    if not Path(model_path).is_dir():
        raise DataError(f"{model_path}: model/tokenizer directory not found; make it with: {MODEL_HINT}")


def load_tokenizer(model_path: str | Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_path))


def resolve_model_type(model_path: Path, model_type: str | None) -> str:
    """``--model-type`` if given, else the ``model_type`` of the checkpoint's config."""
    if model_type:
        return model_type
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(model_path)).model_type
    except (OSError, ValueError) as e:
        raise DataError(f"{model_path}: cannot read config.json ({e}); pass --model-type") from None


# Worker-side tokenizer: loaded once per pool worker by the initializer (set directly when running in-process).
_TOKENIZER: Any = None


def worker_tokenizer() -> Any:
    """The tokenizer of the current :func:`tokenizer_pool` worker (for the functions mapped over it)."""
    return _TOKENIZER


def init_worker(model_path: str) -> None:
    global _TOKENIZER
    # Each worker is one process of the pool already; rust-side threads on top would only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _TOKENIZER = load_tokenizer(model_path)


@contextlib.contextmanager
def tokenizer_pool(
    tokenizer: Any, model_path: str, workers: int
) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """Yields an ordered ``imap(fn, items)`` whose ``fn`` can use :func:`worker_tokenizer`.

    With ``workers > 1`` it is a process pool whose initializer loads the tokenizer once per worker; otherwise
    ``fn`` runs here with the already loaded ``tokenizer``.
    """
    global _TOKENIZER
    if workers <= 1:
        _TOKENIZER = tokenizer
        try:
            yield lambda fn, items: map(fn, items)
        finally:
            _TOKENIZER = None
        return
    # fork: workers start without re-importing transformers (spawn would cost seconds per worker).
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with ctx.Pool(workers, initializer=init_worker, initargs=(model_path,)) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=32)


def open_tokenizer(args: argparse.Namespace) -> tuple[Any, str, Path]:
    """(tokenizer, model type, final output directory ``<processed-data-dir>/<model-type>``) for the parsed args."""
    model_path = Path(args.model_path)
    tokenizer = load_tokenizer(model_path)
    model_type = resolve_model_type(model_path, args.model_type)
    return tokenizer, model_type, Path(args.processed_data_dir) / model_type


# ----------------------------------------------------------------------------------------------------------------
# Arguments


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The output and tokenizer arguments both tools take (after their own input arguments)."""
    p.add_argument("--processed-data-dir", help="output root (default processed_data/<name>/full)")
    p.add_argument("--model-path", required=True, help="checkpoint directory whose tokenizer is used")
    p.add_argument("--model-type", help="output subdirectory (default: model_type of the checkpoint's config)")
    p.add_argument("--data-process-workers", type=int, default=1)


def fill_output_default(args: argparse.Namespace) -> argparse.Namespace:
    """``--processed-data-dir`` defaults to ``processed_data/<data-name>/full``."""
    args.processed_data_dir = args.processed_data_dir or f"processed_data/{args.data_name}/full"
    return args


def check_workers(args: argparse.Namespace) -> None:
    if args.data_process_workers < 1:
        raise DataError(f"--data-process-workers must be >= 1, got {args.data_process_workers}")


# ----------------------------------------------------------------------------------------------------------------
# Atomic output directory


def write_output_dir(final_dir: Path, fill: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Runs ``fill(tmp)``, which writes the data files into the temp directory ``tmp`` and returns the summary;
    stores the summary as ``meta.json`` next to them and moves the directory to ``final_dir``.

    Returns the summary with ``replaced_existing`` added. On any error the temp directory (and the parents made for
    it) is removed and the error re-raised, so ``final_dir`` is either the complete new output or untouched.
    """

    def fill_and_describe(tmp: Path) -> dict[str, Any]:
        summary = fill(tmp)
        (tmp / "meta.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return summary

    summary, replaced = build_dir(final_dir, fill_and_describe)
    summary["replaced_existing"] = replaced
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Summary and command line


def bad_line_report(summary: dict[str, Any], limit: int = 10) -> list[str]:
    """The first ``limit`` skipped-line messages of a summary, indented for the printed report."""
    return [f"    {m}" for m in summary.get("bad_line_messages", [])[:limit]]


def run_cli(process: Callable[[argparse.Namespace], dict[str, Any]],
            format_summary: Callable[[dict[str, Any]], str], args: argparse.Namespace) -> int:
    """``process(args)`` and print its summary: exit code 0; a DataError is one line on stderr and exit code 2."""
    try:
        summary = process(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0
