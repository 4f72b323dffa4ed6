"""What the processing tools share (``tools/process_data_dolly.py``, ``tools/process_data_pretrain.py``).

* the tokenizer: checked, loaded, the output's model type resolved (:func:`open_tokenizer`), and a pool of worker
  processes that each load it once (:func:`tokenizer_pool`, :func:`worker_tokenizer`);
* the common command-line arguments and their defaults (:func:`add_common_args`, :func:`fill_output_default`);
* the atomic output directory with its ``meta.json``: everything is written into a temporary directory next to the
  final one, which is moved into place at the end, replacing an earlier output, so a failed run leaves nothing behind
  (:func:`write_output_dir`, on :func:`data_utils.atomic.build_dir`);
* the command-line wrapper that turns bad input into one line on stderr and exit code 2 (:func:`run_cli`);
* provenance: the tokenizer's fingerprint (:func:`tokenizer_fingerprint`), stored in ``meta.json`` as
  ``tokenizer_sha256``, and the check that a model reads processed data with the tokenizer that wrote it
  (:func:`check_data_tokenizer`: training, evaluation, SeqKD generation).

Importable without torch (transformers is imported where a tokenizer is loaded).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from data_utils.atomic import build_dir
from distill.config import InputError

MODEL_HINT = "python tools/make_tiny_models.py"
DOLLY_TOOL = "tools/process_data_dolly.py"
PRETRAIN_TOOL = "tools/process_data_pretrain.py"


class DataError(InputError):
    """Bad input or arguments; the message is one line that names the input and the fix.

    An :class:`~distill.config.InputError` (so a ValueError): the entry points' ``exit_on_input_error`` reports one
    raised while training or evaluating (a corrupted binary, data of another tokenizer) as one line, exit code 2."""


def one_line(e: BaseException) -> str:
    """An exception's message as one line (its first), for messages that quote a library's error."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# ----------------------------------------------------------------------------------------------------------------
# Tokenizer


def require_model_path(model_path: Path) -> None:
    """The tokenizer directory exists and holds tokenizer files (torch-free, before any input is read)."""
    from distill.inputs import tokenizer_files_problem, tokenizer_source

    if not Path(model_path).is_dir():
        raise DataError(f"{model_path}: model/tokenizer directory not found; make it with: {MODEL_HINT}")
    try:
        why = tokenizer_files_problem(tokenizer_source(model_path))
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{model_path}: unreadable adapter_config.json ({one_line(e)})") from None
    if why:
        raise DataError(f"--model-path {why}")


def check_tokenizer_usable(tokenizer: Any, src: str | Path) -> Any:
    """``tokenizer`` if it can encode text; else DataError naming ``src``. A directory whose vocabulary files are
    missing or unreadable still loads — as a tokenizer of one token, which trains and evaluates without an error."""
    n = len(tokenizer)
    ids = {name: getattr(tokenizer, name, None) for name in ("eos_token_id", "bos_token_id", "pad_token_id",
                                                           "unk_token_id")}
    beyond = {k: v for k, v in ids.items() if isinstance(v, int) and not 0 <= v < n}
    if n < 2 or beyond:
        detail = (f"{', '.join(f'{k} {v}' for k, v in beyond.items())} outside its vocabulary" if beyond and n >= 2
                  else "its vocabulary files are missing or unreadable")
        raise DataError(f"{src}: the tokenizer loaded from it has {n} token(s) ({detail}); copy the tokenizer files "
                        f"(tokenizer.json, or vocab.json + merges.txt, or tokenizer.model) of the model it was made "
                        f"from into {src}")
    return tokenizer


def load_tokenizer(model_path: str | Path, trust_remote_code: bool = False) -> Any:
    """``AutoTokenizer.from_pretrained``, checked usable; custom tokenizer code runs only with ``trust_remote_code``."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(model_path), trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise DataError(f"{model_path}: its tokenizer needs custom code from the checkpoint, which is not run "
                            f"by default; pass --trust-remote-code if you trust it") from None
        raise
    return check_tokenizer_usable(tok, model_path)


def resolve_model_type(model_path: Path, model_type: str | None, trust_remote_code: bool = False) -> str:
    """``--model-type`` if given, else the ``model_type`` of the checkpoint's config."""
    if model_type:
        return model_type
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(model_path), trust_remote_code=trust_remote_code).model_type
    except (OSError, ValueError) as e:
        raise DataError(f"{model_path}: cannot read config.json ({one_line(e)}); pass --model-type") from None


# Worker-side tokenizer: loaded once per pool worker by the initializer (set directly when running in-process).
_TOKENIZER: Any = None


def worker_tokenizer() -> Any:
    """The tokenizer of the current :func:`tokenizer_pool` worker (for the functions mapped over it)."""
    return _TOKENIZER


def init_worker(model_path: str, trust_remote_code: bool = False) -> None:
    global _TOKENIZER
    # Each worker is one process of the pool already; rust-side threads on top would only oversubscribe the cores.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _TOKENIZER = load_tokenizer(model_path, trust_remote_code)


@contextlib.contextmanager
def tokenizer_pool(
    tokenizer: Any, model_path: str, workers: int, trust_remote_code: bool = False
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
    with ctx.Pool(workers, initializer=init_worker, initargs=(model_path, trust_remote_code)) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=32)


def open_tokenizer(args: argparse.Namespace) -> tuple[Any, str, Path]:
    """(tokenizer, model type, final output directory ``<processed-data-dir>/<model-type>``) for the parsed args."""
    model_path = Path(args.model_path)
    trust = bool(getattr(args, "trust_remote_code", False))
    tokenizer = load_tokenizer(model_path, trust)
    model_type = resolve_model_type(model_path, args.model_type, trust)
    return tokenizer, model_type, Path(args.processed_data_dir) / model_type


# ----------------------------------------------------------------------------------------------------------------
# Provenance: which tokenizer made a processed directory


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """sha256 over the vocabulary (every token and its id, added tokens included) and the special tokens (bos, eos
    and unk with their ids, and the set of all special tokens).

    Stored ids mean the tokens of this mapping, so two tokenizers with equal fingerprints read the same binaries
    alike; the file format (tokenizer.json or vocab + merges) does not change it, nor a round trip through
    ``save_pretrained``. The pad token's *name* is left out: distill.models.load_tokenizer makes EOS the pad token
    where there is none, and the stored ids never contain padding."""
    vocab = sorted(((str(t), int(i)) for t, i in tokenizer.get_vocab().items()), key=lambda ti: (ti[1], ti[0]))
    named = {}
    for name in ("bos_token", "eos_token", "unk_token"):
        tok = getattr(tokenizer, name, None)
        named[name] = None if tok is None else [str(tok), getattr(tokenizer, f"{name}_id", None)]
    payload = {"vocab": vocab, "special": named,
               "all_special": sorted({str(t) for t in (getattr(tokenizer, "all_special_tokens", None) or [])})}
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")
    return hashlib.sha256(blob).hexdigest()


def read_meta(data_dir: str | Path) -> Optional[dict[str, Any]]:
    """A processed directory's ``meta.json`` (None when there is none); DataError when it is unreadable."""
    path = Path(data_dir) / "meta.json"
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: unreadable ({one_line(e)}); re-process the data") from None
    if not isinstance(meta, dict):
        raise DataError(f"{path}: not a JSON object; re-process the data")
    return meta


def print_warning(line: str) -> None:
    """A one-line warning on stderr."""
    print(line, file=sys.stderr, flush=True)


def check_data_tokenizer(data_dir: str | Path, tokenizer: Any, model_path: str | Path, *, flag: str = "--data-dir",
                         tool: str = DOLLY_TOOL, warn: Optional[Callable[[str], None]] = print_warning
                         ) -> Optional[str]:
    """DataError unless ``data_dir`` was processed with ``tokenizer`` (``meta.json``'s ``tokenizer_sha256``, else its
    ``vocab_size``): ids of another tokenizer would be read as other tokens and train or score nonsense without an
    error. Data processed before fingerprints were recorded gets one warning line, given to ``warn`` (``None``:
    silent) and returned (None when there is none)."""
    meta = read_meta(data_dir)
    fix = f"re-process it with the model's tokenizer: python {tool} --model-path {model_path} ..."
    line = None
    if meta is None:
        line = (f"warning: {flag} {data_dir}: no meta.json, so the tokenizer that made it is unknown and cannot be "
                f"checked against {model_path}'s; {fix}")
        if warn:
            warn(line)
        return line
    made_with = meta.get("tokenizer", "an unrecorded tokenizer")
    recorded, vocab = meta.get("tokenizer_sha256"), meta.get("vocab_size")
    if isinstance(vocab, int) and vocab != len(tokenizer):
        raise DataError(f"{flag} {data_dir} was processed with the tokenizer of {made_with} (a vocabulary of {vocab} "
                        f"tokens) but {model_path}'s tokenizer has {len(tokenizer)}; {fix}")
    if recorded is None:
        line = (f"warning: {flag} {data_dir}: meta.json records no tokenizer fingerprint (processed before they "
                f"were recorded), so it cannot be checked against {model_path}'s tokenizer; {fix}")
        if warn:
            warn(line)
        return line
    mine = tokenizer_fingerprint(tokenizer)
    if recorded != mine:
        raise DataError(f"{flag} {data_dir} was processed with another tokenizer: {made_with} (sha256 "
                        f"{str(recorded)[:12]}) vs {model_path}'s (sha256 {mine[:12]}), so its token ids would be "
                        f"read as other tokens; {fix}")
    return None


def check_training_data(data_cfg: Any, tokenizer: Any, model_path: str, *, warn: bool = True) -> list[str]:
    """:func:`check_data_tokenizer` for a training run's ``--data-dir`` and ``--lm-data-dir`` (a DataConfig); returns
    the warning lines (for the run's log). ``warn=False`` (ranks other than the first) keeps stderr to one copy."""
    say = print_warning if warn else None
    lines = [check_data_tokenizer(data_cfg.data_dir, tokenizer, model_path, warn=say)]
    if data_cfg.lm_data_dir is not None:
        lines.append(check_data_tokenizer(data_cfg.lm_data_dir, tokenizer, model_path, flag="--lm-data-dir",
                                          tool=PRETRAIN_TOOL, warn=say))
    return [line for line in lines if line]


# ----------------------------------------------------------------------------------------------------------------
# Arguments


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The output and tokenizer arguments both tools take (after their own input arguments)."""
    p.add_argument("--processed-data-dir", help="output root (default processed_data/<name>/full)")
    p.add_argument("--model-path", required=True, help="checkpoint directory whose tokenizer is used")
    p.add_argument("--model-type", help="output subdirectory (default: model_type of the checkpoint's config)")
    p.add_argument("--data-process-workers", type=int, default=1)
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow a tokenizer that needs custom code from the checkpoint (runs that code; off by default)")


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
    """``process(args)`` and print its summary: exit code 0; a DataError (any InputError) is one line on stderr and
    exit code 2."""
    try:
        summary = process(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0
