#!/usr/bin/env python
"""Tokenize raw instruction data (JSONL) into indexed binaries for SFT / distillation / evaluation.

    python tools/process_data_dolly.py --data-dir data/dolly --model-path checkpoints/tiny-gpt2-teacher

Input (``--data-dir``, default ``data/<data-name>``), one of:

* ``train.jsonl`` + ``valid.jsonl``: used as given (``--dev-num`` > 0 caps the number of valid examples);
* ``raw.jsonl``: shuffled with ``--seed``; the first ``--dev-num`` examples become ``valid``, the rest ``train``.

With ``--eval-set`` every example of ``raw.jsonl`` (or, if absent, ``valid.jsonl``) goes, in file order, to a
single ``valid`` split (``--dev-num`` > 0 caps it). Records are Dolly-style (instruction/context/response) or
instruction/input/output, see :mod:`data_utils.prompts`.

Output, in ``<processed-data-dir>/<model-type>/`` (default ``processed_data/<data-name>/full/<model-type>/``):

* ``{train,valid}_0.{bin,idx}``: prompt and response token ids (:mod:`data_utils.indexed_dataset`); the prompt
  and the response are tokenized separately (no special tokens), so each decodes back to its text exactly.
  Examples whose prompt exceeds ``--max-prompt-length`` tokens are dropped; responses are truncated so that
  ``len(prompt) + len(response) + 1 <= --max-length`` (the 1 is the EOS the training collator appends).
  With ``--only-prompt`` the binaries hold prompts only.
* ``{train,valid}.jsonl``: one record per kept example, in binary order: instruction, input, output (full, never
  truncated), category, references, prompt.
* ``meta.json``: tokenizer (its path and ``tokenizer_sha256``, the fingerprint training and evaluation check),
  vocabulary size, model type, length limits, template and counts.

Everything is written to a temporary directory and moved into place at the end (replacing an earlier output),
so a failed run leaves nothing behind. Input errors stop the run before any tokenization with one line
``<file>:<line>: <reason>`` (exit code 2), unless ``--skip-bad-lines`` is given, which skips and counts them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/process_data_dolly.py`: make the repo's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from data_utils.atomic import jsonl_line  # noqa: E402
from data_utils.indexed_dataset import IndexedDatasetBuilder  # noqa: E402
from data_utils.processing import (DataError, add_common_args, bad_line_report, check_workers,  # noqa: E402
                                   fill_output_default, open_tokenizer, require_model_path, run_cli,
                                   tokenizer_fingerprint, tokenizer_pool, worker_tokenizer, write_output_dir)
from data_utils.prompts import build_prompt, normalize_record  # noqa: E402

DATA_HINT = (
    "put the raw records in <data-dir>/raw.jsonl (e.g. databricks-dolly-15k.jsonl), or make a synthetic set "
    "with python tools/make_synthetic_data.py and pass its directory"
)


# ----------------------------------------------------------------------------------------------------------------
# Reading and validating input


# Raw-record fields consumed by normalize_record (both schemas) and the field this tool adds itself.
_KNOWN_FIELDS = frozenset({"instruction", "input", "output", "context", "response", "category", "references", "prompt"})


@dataclass
class ReadResult:
    records: list[dict]
    bad_lines: int = 0
    errors: list[str] = field(default_factory=list)


def _check_unicode(value: Any, where: str = "record") -> None:
    """ValueError when a string anywhere in ``value`` (keys included) is not Unicode text: JSON's ``\\udXXX``
    escapes can spell a lone surrogate, which neither the tokenizer nor a UTF-8 file can take (found by fuzzing)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"{where} holds a lone surrogate {value[e.start]!r} (not Unicode text; "
                             f"an unpaired \\u{ord(value[e.start]):04x} escape)") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_unicode(k, "a field name" if where == "record" else f"a key in {where}")
            _check_unicode(v, f"field {k!r}" if where == "record" else where)
    elif isinstance(value, list):
        for v in value:
            _check_unicode(v, where)


def read_records(path: Path, skip_bad_lines: bool) -> ReadResult:
    """Parse and normalize every non-blank line of a JSONL file.

    A bad line (invalid JSON, not an object, missing or non-string fields) raises ``DataError("<file>:<line>:
    <reason>")`` unless ``skip_bad_lines``, in which case it is counted and its message kept.
    """
    out = ReadResult(records=[])
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except RecursionError:
                    raise ValueError("JSON nested too deeply") from None
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
                _check_unicode(obj)
                rec = normalize_record(obj)
                # Extra fields (e.g. a difficulty label) ride along into the output jsonl for later analysis.
                rec.update({k: v for k, v in obj.items() if k not in _KNOWN_FIELDS})
                out.records.append(rec)
            except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError is a ValueError
                msg = f"{path}:{lineno}: {str(e).splitlines()[0]}"
                if not skip_bad_lines:
                    raise DataError(msg + " (fix the line or pass --skip-bad-lines)") from None
                out.bad_lines += 1
                out.errors.append(msg)
    return out


def _read(path: Path, skip_bad_lines: bool, bad: list[str]) -> list[dict]:
    if not path.is_file():
        raise DataError(f"{path}: input file not found; {DATA_HINT}")
    res = read_records(path, skip_bad_lines)
    bad.extend(res.errors)
    if not res.records:
        raise DataError(f"{path}: no examples in the file (empty input); {DATA_HINT}")
    return res.records


def load_splits(args: argparse.Namespace) -> tuple[dict[str, list[dict]], dict[str, str], list[str]]:
    """Read the input files and split them: returns ({split: records}, {split: source}, bad-line messages)."""
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found; {DATA_HINT}")
    raw, train, valid = data_dir / "raw.jsonl", data_dir / "train.jsonl", data_dir / "valid.jsonl"
    cap = args.dev_num if args.dev_num > 0 else None
    bad: list[str] = []
    if args.eval_set:
        src = raw if raw.is_file() else valid
        if not src.is_file():
            raise DataError(f"{data_dir}: --eval-set needs raw.jsonl or valid.jsonl there; {DATA_HINT}")
        return {"valid": _read(src, args.skip_bad_lines, bad)[:cap]}, {"valid": str(src)}, bad
    if train.is_file():
        splits = {
            "train": _read(train, args.skip_bad_lines, bad),
            "valid": _read(valid, args.skip_bad_lines, bad)[:cap],
        }
        return splits, {"train": str(train), "valid": str(valid)}, bad
    if not raw.is_file():
        raise DataError(f"{raw}: input file not found (nor {train.name}); {DATA_HINT}")
    records = _read(raw, args.skip_bad_lines, bad)
    if not 0 < args.dev_num < len(records):
        raise DataError(
            f"{raw}: --dev-num {args.dev_num} must be between 1 and {len(records) - 1} "
            f"({len(records)} examples, the rest become train)"
        )
    random.Random(args.seed).shuffle(records)
    splits = {"valid": records[: args.dev_num], "train": records[args.dev_num :]}
    return splits, {"train": str(raw), "valid": str(raw)}, bad


# ----------------------------------------------------------------------------------------------------------------
# Tokenizing


def fit_lengths(prompt_len: int, response_len: int, max_prompt_length: int, max_length: int) -> int | None:
    """Number of response tokens to keep, or None to drop the example (prompt longer than max_prompt_length).

    The kept response satisfies ``prompt_len + kept + 1 <= max_length``: one slot stays free for the EOS token
    the training collator appends.
    """
    if prompt_len > max_prompt_length:
        return None
    return max(0, min(response_len, max_length - 1 - prompt_len))


def encode_example(job: tuple[dict, bool]) -> tuple[str, list[int], list[int]]:
    """(record, chat_template) -> (prompt text, prompt ids [P], response ids [R]); runs in a worker."""
    rec, chat_template = job
    tokenizer = worker_tokenizer()
    prompt = build_prompt(rec, tokenizer, chat_template=chat_template)
    p_ids = tokenizer.encode(prompt, add_special_tokens=False)
    r_ids = tokenizer.encode(rec["output"], add_special_tokens=False)
    return prompt, p_ids, r_ids


def write_split(
    records: list[dict], encoded: Iterable[tuple[str, list[int], list[int]]], out_dir: Path, split: str,
    vocab_size: int, args: argparse.Namespace,
) -> dict[str, int]:
    """Write ``{split}_0.{bin,idx}`` and ``{split}.jsonl`` into ``out_dir``; returns the split's counts."""
    counts = {"read": len(records), "kept": 0, "dropped_long_prompt": 0, "truncated_response": 0}
    with IndexedDatasetBuilder(out_dir / f"{split}_0", vocab_size) as builder, \
            (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as jf:
        for rec, (prompt, p_ids, r_ids) in zip(records, encoded):
            keep = fit_lengths(len(p_ids), len(r_ids), args.max_prompt_length, args.max_length)
            if keep is None:
                counts["dropped_long_prompt"] += 1
                continue
            if args.only_prompt:
                builder.add(p_ids, [])
            else:
                counts["truncated_response"] += keep < len(r_ids)
                builder.add(p_ids, r_ids[:keep])
            jf.write(jsonl_line({**rec, "prompt": prompt}))  # one line for any reader, splitlines() included
            counts["kept"] += 1
        if counts["kept"] == 0:
            raise DataError(
                f"{split}: all {counts['read']} examples have prompts longer than --max-prompt-length "
                f"{args.max_prompt_length} tokens; raise --max-prompt-length"
            )
    return counts


def check_args(args: argparse.Namespace) -> None:
    if args.max_prompt_length < 1 or args.max_length < 2:
        raise DataError("--max-prompt-length must be >= 1 and --max-length >= 2")
    if args.max_prompt_length >= args.max_length:
        raise DataError(
            f"--max-prompt-length {args.max_prompt_length} must be below --max-length {args.max_length} "
            f"(the response and the EOS need room)"
        )
    check_workers(args)


def process(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole conversion; returns the summary also stored in ``meta.json``. Raises DataError on bad input."""
    check_args(args)
    model_path = Path(args.model_path)
    require_model_path(model_path)
    splits, sources, bad = load_splits(args)  # validates every line before any tokenization
    tokenizer, model_type, final_dir = open_tokenizer(args)
    if args.chat_template and not getattr(tokenizer, "chat_template", None):
        raise DataError(f"{model_path}: tokenizer has no chat_template; drop --chat-template or use a chat model")
    vocab_size = len(tokenizer)
    fingerprint = tokenizer_fingerprint(tokenizer)

    def fill(tmp: Path) -> dict[str, Any]:
        split_counts = {}
        with tokenizer_pool(tokenizer, str(model_path), args.data_process_workers, args.trust_remote_code) as imap:
            for split, records in splits.items():
                encoded = imap(encode_example, [(rec, args.chat_template) for rec in records])
                split_counts[split] = write_split(records, encoded, tmp, split, vocab_size, args)
        totals = {k: sum(c[k] for c in split_counts.values()) for k in next(iter(split_counts.values()))}
        return {
            "output_dir": str(final_dir),
            "tokenizer": str(model_path.resolve()),
            "tokenizer_sha256": fingerprint,  # what training and evaluation check (data_utils.processing)
            "vocab_size": vocab_size,
            "model_type": model_type,
            "max_prompt_length": args.max_prompt_length,
            "max_length": args.max_length,
            "template": "chat" if args.chat_template else "instruction",
            "only_prompt": bool(args.only_prompt),
            "eval_set": bool(args.eval_set),
            "seed": args.seed,
            "sources": sources,
            "counts": {**totals, "bad_lines": len(bad), "splits": split_counts},
        }

    summary = write_output_dir(final_dir, fill)
    summary["bad_line_messages"] = bad
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    lines = [f"wrote {summary['output_dir']} (model_type={summary['model_type']}, vocab={summary['vocab_size']}, "
             f"template={summary['template']})"]
    for split, sc in c["splits"].items():
        lines.append(
            f"  {split:5s}: read {sc['read']}, kept {sc['kept']}, dropped (prompt > {summary['max_prompt_length']} "
            f"tokens) {sc['dropped_long_prompt']}, truncated responses {sc['truncated_response']}"
        )
    lines.append(f"  bad lines skipped: {c['bad_lines']}")
    lines.extend(bad_line_report(summary))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-name", help="dataset name (default: the --data-dir folder's name, else dolly)")
    p.add_argument("--data-dir", help="directory with raw.jsonl, or train.jsonl + valid.jsonl (default data/<name>)")
    add_common_args(p)
    p.add_argument("--max-prompt-length", type=int, default=256, help="drop examples with longer prompts (tokens)")
    p.add_argument("--max-length", type=int, default=512, help="truncate responses: prompt + response + EOS <= this")
    p.add_argument("--dev-num", type=int, default=1000, help="valid examples split off raw.jsonl / cap on valid")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--chat-template", action="store_true", help="render prompts with the tokenizer's chat template")
    p.add_argument("--only-prompt", action="store_true", help="binaries hold prompts only (jsonl keeps outputs)")
    p.add_argument("--eval-set", action="store_true", help="all examples to one valid split, in file order")
    p.add_argument("--skip-bad-lines", action="store_true", help="skip and count malformed lines instead of failing")
    args = p.parse_args(argv)
    args.data_name = args.data_name or (Path(args.data_dir).resolve().name if args.data_dir else "dolly")
    args.data_dir = args.data_dir or f"data/{args.data_name}"
    return fill_output_default(args)


def main(argv: list[str] | None = None) -> int:
    return run_cli(process, format_summary, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
