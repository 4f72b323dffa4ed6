#!/usr/bin/env python
"""Tokenize a plain-text pretraining corpus and pack it into fixed-length chunks (indexed binaries).

    python tools/process_data_pretrain.py --data-path data/openwebtext/data.txt \\
        --model-path checkpoints/tiny-gpt2-teacher --max-length 512

Input: one document per line; a literal ``<@x(x!>`` inside a line stands for a newline of the document. Blank
lines are skipped. Each document is tokenized (no special tokens), followed by the EOS token, and all documents
are concatenated in file order and cut into chunks of exactly ``--max-length`` tokens; the incomplete tail is
dropped. The first ``--dev-num`` chunks form ``valid``, the rest ``train``.

Output in ``<processed-data-dir>/<model-type>/`` (default ``processed_data/<data-name>/full/<model-type>/``):
``{train,valid}_0.{bin,idx}`` (prompt length 0: every chunk is all "response") and ``meta.json`` (with the
tokenizer's fingerprint ``tokenizer_sha256``, which training checks for ``--lm-data-dir``). As in
``tools/process_data_dolly.py``: input errors stop the run before tokenization with ``<file>:<line>: <reason>``
(exit code 2) unless ``--skip-bad-lines``; the output is built in a temporary directory and moved into place.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/process_data_pretrain.py`: make repo packages importable
    sys.path.insert(0, str(REPO_ROOT))

from data_utils.indexed_dataset import IndexedDatasetBuilder  # noqa: E402
from data_utils.processing import (DataError, add_common_args, bad_line_report, check_workers,  # noqa: E402
                                   fill_output_default, open_tokenizer, require_model_path, run_cli,
                                   tokenizer_fingerprint, tokenizer_pool, worker_tokenizer, write_output_dir)
from data_utils.prompts import clean_text  # noqa: E402

DOC_NEWLINE = "<@x(x!>"
CORPUS_HINT = "write one document per line to it, with every newline inside a document written as <@x(x!>"


def read_documents(path: Path, skip_bad_lines: bool) -> tuple[list[str], int, list[str]]:
    """Documents of the corpus (marker -> newline, NFC), the number of bad lines and their messages.

    A line that is not valid UTF-8 raises ``DataError("<file>:<line>: ...")`` unless ``skip_bad_lines``.
    """
    if not path.is_file():
        raise DataError(f"{path}: corpus file not found; {CORPUS_HINT}")
    docs: list[str] = []
    bad: list[str] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                msg = f"{path}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})"
                if not skip_bad_lines:
                    raise DataError(msg + " (fix the line or pass --skip-bad-lines)") from None
                bad.append(msg)
                continue
            line = line.rstrip("\r\n")
            if line.strip():
                docs.append(clean_text(line.replace(DOC_NEWLINE, "\n")))
    if not docs:
        raise DataError(f"{path}: no documents in the file (empty input); {CORPUS_HINT}")
    return docs, len(bad), bad


def encode_document(doc: str) -> list[int]:
    """Document text -> token ids [T] (no special tokens); runs in a worker."""
    return worker_tokenizer().encode(doc, add_special_tokens=False)


class ChunkPacker:
    """Concatenates token streams and emits full chunks of ``max_length`` tokens; the remainder stays buffered."""

    def __init__(self, max_length: int):
        self.max_length = max_length
        self._buf: list[int] = []

    def feed(self, ids: list[int]) -> list[np.ndarray]:
        """Append ids; returns the chunks completed by them, each int64 [max_length]."""
        self._buf.extend(ids)
        n_full = len(self._buf) // self.max_length
        if n_full == 0:
            return []
        cut = n_full * self.max_length
        arr = np.asarray(self._buf[:cut], dtype=np.int64).reshape(n_full, self.max_length)
        del self._buf[:cut]
        return list(arr)

    @property
    def remainder(self) -> int:
        return len(self._buf)


def check_args(args: argparse.Namespace) -> None:
    if args.max_length < 2:
        raise DataError(f"--max-length must be >= 2, got {args.max_length}")
    if args.dev_num < 1:
        raise DataError(f"--dev-num must be >= 1 (number of valid chunks), got {args.dev_num}")
    check_workers(args)


def process(args: argparse.Namespace) -> dict[str, Any]:
    """Tokenize, pack and write; returns the summary also stored in ``meta.json``. Raises DataError on bad input."""
    check_args(args)
    model_path = Path(args.model_path)
    require_model_path(model_path)
    data_path = Path(args.data_path)
    docs, n_bad, bad = read_documents(data_path, args.skip_bad_lines)  # validates every line before tokenizing
    tokenizer, model_type, final_dir = open_tokenizer(args)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError(f"{model_path}: tokenizer has no eos_token; documents must be separated by one")
    vocab_size = len(tokenizer)
    fingerprint = tokenizer_fingerprint(tokenizer)

    def fill(tmp: Path) -> dict[str, Any]:
        packer = ChunkPacker(args.max_length)
        n_tokens = 0
        chunks = {"valid": 0, "train": 0}
        with IndexedDatasetBuilder(tmp / "valid_0", vocab_size) as valid, \
                IndexedDatasetBuilder(tmp / "train_0", vocab_size) as train, \
                tokenizer_pool(tokenizer, str(model_path), args.data_process_workers, args.trust_remote_code) as imap:
            for ids in imap(encode_document, docs):
                n_tokens += len(ids) + 1
                for chunk in packer.feed([*ids, eos]):
                    split = "valid" if chunks["valid"] < args.dev_num else "train"
                    (valid if split == "valid" else train).add([], chunk)
                    chunks[split] += 1
            if chunks["train"] == 0:
                raise DataError(
                    f"{data_path}: {n_tokens} tokens make {chunks['valid']} chunks of {args.max_length}, all taken "
                    f"by --dev-num {args.dev_num}; lower --dev-num or --max-length, or add documents"
                )
        return {
            "output_dir": str(final_dir),
            "source": str(data_path),
            "tokenizer": str(model_path.resolve()),
            "tokenizer_sha256": fingerprint,  # what training and evaluation check (data_utils.processing)
            "vocab_size": vocab_size,
            "model_type": model_type,
            "max_length": args.max_length,
            "eos_token_id": eos,
            "counts": {
                "docs": len(docs),
                "tokens": n_tokens,
                "chunks": chunks["train"] + chunks["valid"],
                "train_chunks": chunks["train"],
                "valid_chunks": chunks["valid"],
                "dropped_tail_tokens": packer.remainder,
                "bad_lines": n_bad,
            },
        }

    summary = write_output_dir(final_dir, fill)
    summary["bad_line_messages"] = bad
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [
        f"wrote {summary['output_dir']} (model_type={summary['model_type']}, vocab={summary['vocab_size']})",
        f"  docs {c['docs']}, tokens {c['tokens']} (with one EOS per doc), chunks {c['chunks']} of "
        f"{summary['max_length']} (train {c['train_chunks']}, valid {c['valid_chunks']}), "
        f"tail tokens dropped {c['dropped_tail_tokens']}, bad lines skipped {c['bad_lines']}",
    ]
    lines.extend(bad_line_report(summary))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-name", help="corpus name (default: the --data-path folder's name, else openwebtext)")
    p.add_argument("--data-path", help="corpus text file, one document per line (default data/<name>/data.txt)")
    add_common_args(p)
    p.add_argument("--max-length", type=int, default=512, help="tokens per chunk")
    p.add_argument("--dev-num", type=int, default=20, help="number of chunks in the valid split")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip and count non-UTF-8 lines instead of failing")
    args = p.parse_args(argv)
    args.data_name = args.data_name or (Path(args.data_path).resolve().parent.name if args.data_path else "openwebtext")
    args.data_path = args.data_path or f"data/{args.data_name}/data.txt"
    return fill_output_default(args)


def main(argv: list[str] | None = None) -> int:
    return run_cli(process, format_summary, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
