"""Fuzzing the instruction-data processor (tools/process_data_dolly.py), in-process with the tiny tokenizer.

Hypothesis feeds it random bytes, random JSON values (one per line) and random records (the known fields with values
of any JSON type, odd Unicode included: lone surrogates, NUL, combining marks, CR/LF), under random layouts
(raw.jsonl or train.jsonl + valid.jsonl, --eval-set) and flags (--dev-num, --skip-bad-lines, tiny length limits).
Every example must either

* succeed with a valid output: both binaries open with IndexedDataset (bounded by the tokenizer's length), hold the
  counts the summary reports, and agree with their jsonl records and meta.json (the tokenizer fingerprint included); or
* raise the project's DataError with a non-empty one-line message.

Any other exception fails the test. Derandomized (a fixed seed, no example database), so CI runs the same 500
examples every time; about 10 s on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from data_utils.indexed_dataset import IndexedDataset
from data_utils import processing
from data_utils.processing import DataError, load_tokenizer, tokenizer_fingerprint
from tools import process_data_dolly as pdd

def weighted(*choices: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """One of the strategies, drawn with the given weights (``st.one_of`` merges a strategy repeated in its list, so
    repeating it does not weight it)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


FIELDS = ("instruction", "input", "output", "context", "response", "category", "references", "prompt", "extra")

# Text that stresses normalisation and encoding: surrogates (not encodable as UTF-8), NUL, CR, combining marks, line
# separators that str.splitlines() breaks at.
odd_text = st.text(max_size=12) | st.sampled_from(
    ["", " ", "\r\n", "\ud800", "a\udcffb", "\x00", "e\u0301", "\u212b", "<|endoftext|>", "\ufeff", "a\u2028b", "\x85"])
json_scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | odd_text
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(odd_text, inner, max_size=3), max_leaves=4)
# Mostly well-formed records of either schema (so tokenizing and writing run often), with odd text and extra fields
# of any JSON type; sometimes any fields with any values.
optional_text = odd_text | st.none()
instruct_record = st.fixed_dictionaries(
    {"instruction": odd_text, "output": odd_text},
    optional={"input": optional_text, "category": optional_text, "references": st.lists(odd_text, min_size=1, max_size=2),
              "prompt": json_values, "extra": json_values})
dolly_record = st.fixed_dictionaries({"instruction": odd_text, "response": odd_text},
                                     optional={"context": optional_text, "category": optional_text})
any_record = st.dictionaries(st.sampled_from(FIELDS), st.one_of(odd_text, json_values, st.lists(odd_text)),
                             max_size=6)
records = weighted((2, instruct_record), (1, dolly_record), (1, any_record))
# ensure_ascii=True writes a lone surrogate as a valid \udXXX escape, which json.loads turns back into one.
dumps = st.sampled_from([False, True]).map(lambda ascii_: lambda v: json.dumps(v, ensure_ascii=ascii_))
good_lines = st.lists(st.builds(lambda f, r: f(r), dumps, st.one_of(instruct_record, dolly_record)), min_size=2,
                      max_size=5)
record_lines = weighted((1, st.lists(st.builds(lambda f, r: f(r), dumps, records), max_size=5)),
                        (1, st.lists(st.builds(lambda f, r: f(r), dumps, records), min_size=2, max_size=5)),
                        (8, good_lines))
value_lines = st.lists(st.builds(lambda f, v: f(v), dumps, json_values), min_size=0, max_size=4)


def _encode(lines: list[str]) -> bytes:
    # surrogatepass: a JSON string may carry a lone surrogate written raw, which is not valid UTF-8 on disk
    return "".join(line + "\n" for line in lines).encode("utf-8", "surrogatepass")


file_bytes = weighted((1, st.binary(max_size=200)), (1, value_lines.map(_encode)),
                      (1, st.tuples(record_lines, st.binary(max_size=20)).map(lambda t: _encode(t[0]) + t[1])),
                      (9, record_lines.map(_encode)))


@st.composite
def cases(draw: st.DrawFn) -> dict:
    layout = draw(st.sampled_from(["raw", "train_valid", "eval_raw", "eval_valid"]))
    names = {"raw": ["raw.jsonl"], "train_valid": ["train.jsonl", "valid.jsonl"], "eval_raw": ["raw.jsonl"],
             "eval_valid": ["valid.jsonl"]}[layout]
    files = {name: draw(file_bytes) for name in names}
    max_length = draw(st.sampled_from([2, 3, 64, 128, 512, 512, 512, 512]))  # the template alone: ~30 tokens
    max_prompt = draw(weighted((1, st.integers(1, max_length)), (3, st.just(max_length - 1))))
    flags = ["--max-length", str(max_length), "--max-prompt-length", str(max_prompt), "--model-type", "gpt2",
             "--dev-num", str(draw(st.sampled_from([-1, 0, 1, 1, 1, 2, 3]))), "--seed", str(draw(st.integers(0, 3)))]
    if layout.startswith("eval"):
        flags.append("--eval-set")
    for flag in ("--skip-bad-lines", "--only-prompt"):
        if draw(st.booleans()):
            flags.append(flag)
    return {"files": files, "flags": flags}


@pytest.fixture(scope="module")
def fuzz_env(tiny_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The tiny tokenizer, loaded once: the processor's own loading (checked in tests/test_provenance.py) would cost
    two thirds of each example's time. --model-type is given for the same reason (no config read)."""
    tok = load_tokenizer(tiny_tokenizer_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(processing, "load_tokenizer", lambda path, trust_remote_code=False: tok)
        yield {"model": tiny_tokenizer_dir, "root": tmp_path_factory.mktemp("fuzz"), "vocab": len(tok),
               "fingerprint": tokenizer_fingerprint(tok)}


def _check_output(summary: dict, vocab: int, fingerprint: str, only_prompt: bool) -> None:
    out = Path(summary["output_dir"])
    meta = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    assert meta["tokenizer_sha256"] == fingerprint and meta["vocab_size"] == vocab
    assert set(summary["counts"]["splits"]) == set(meta["counts"]["splits"])
    for split, counts in summary["counts"]["splits"].items():
        ds = IndexedDataset(out / f"{split}_0", vocab_size=vocab)  # re-checks sizes, pointers and id bounds
        assert len(ds) == counts["kept"] > 0
        assert counts["kept"] + counts["dropped_long_prompt"] == counts["read"]
        rows = [json.loads(line) for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(rows) == len(ds)
        for i, row in enumerate(rows):
            ids = ds[i]
            assert ids.size == 0 or 0 <= int(ids.min()) <= int(ids.max()) < vocab
            assert ds.prompt_lengths[i] <= summary["max_prompt_length"]
            assert int(ds.sizes[i]) + 1 <= summary["max_length"]  # room for the EOS the collator appends
            assert isinstance(row["output"], str) and isinstance(row["prompt"], str)
            if only_prompt:
                assert ds.response(i).size == 0


@settings(max_examples=500, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=cases())
def test_processor_succeeds_or_raises_data_error(fuzz_env: dict, case: dict) -> None:
    work = Path(tempfile.mkdtemp(dir=fuzz_env["root"]))
    try:
        data = work / "data"
        data.mkdir()
        for name, content in case["files"].items():
            (data / name).write_bytes(content)
        argv = ["--data-dir", str(data), "--processed-data-dir", str(work / "out"), "--model-path",
                str(fuzz_env["model"]), *case["flags"]]
        try:
            summary = pdd.process(pdd.parse_args(argv))
        except DataError as e:
            event(f"DataError: {str(e).split(':')[-1][:40]}")
            msg = str(e)
            assert msg.strip() and "\n" not in msg and "\r" not in msg, repr(msg)
            assert not (work / "out").exists() or not any((work / "out").rglob("*.bin")), "failed run left output"
            return
        event("success")
        _check_output(summary, fuzz_env["vocab"], fuzz_env["fingerprint"], "--only-prompt" in case["flags"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
