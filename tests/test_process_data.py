"""Raw -> binary processing (tools/process_data_dolly.py) and pretraining packing (tools/process_data_pretrain.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from data_utils.indexed_dataset import IndexedDataset
from data_utils.prompts import build_prompt, clean_text
from tools import process_data_dolly as pdd
from tools import process_data_pretrain as pdp

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(data_dir: Path, out: Path, model: Path, *flags: str) -> dict:
    return pdd.process(pdd.parse_args(
        ["--data-dir", str(data_dir), "--processed-data-dir", str(out), "--model-path", str(model), *flags]))


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


# ------------------------------------------------------------------------------------------------------------------
# lengths


def test_fit_lengths_boundaries() -> None:
    assert pdd.fit_lengths(10, 5, max_prompt_length=10, max_length=20) == 5  # 10 + 5 + 1 <= 20: untouched
    assert pdd.fit_lengths(11, 5, max_prompt_length=10, max_length=20) is None  # prompt too long: dropped
    assert pdd.fit_lengths(10, 9, max_prompt_length=10, max_length=20) == 9  # exactly fits with the EOS slot
    assert pdd.fit_lengths(10, 10, max_prompt_length=10, max_length=20) == 9  # one token over: truncated
    assert pdd.fit_lengths(19, 3, max_prompt_length=19, max_length=20) == 0


def test_truncation_and_drop_counts_exact(tmp_path: Path, tok, tiny_tokenizer_dir: Path) -> None:
    short = {"instruction": "Say hi.", "input": "", "output": "Hi there, friend.", "category": "a"}
    long_prompt = {"instruction": "Say hi. " + "very " * 80, "input": "", "output": "Hi.", "category": "b"}
    long_resp = {"instruction": "Tell a story.", "input": "about a cat", "output": "The cat sat. " * 60,
                 "category": "c"}
    p_len = {k: len(tok.encode(build_prompt(r), add_special_tokens=False))
             for k, r in [("short", short), ("long_prompt", long_prompt), ("long_resp", long_resp)]}
    max_prompt = max(p_len["short"], p_len["long_resp"])
    assert p_len["long_prompt"] > max_prompt
    max_len = max_prompt + 12
    data = tmp_path / "data"
    _write_jsonl(data / "train.jsonl", [short, long_prompt, long_resp, short])
    _write_jsonl(data / "valid.jsonl", [long_resp, long_prompt])

    summary = _run(data, tmp_path / "out", tiny_tokenizer_dir,
                   "--max-prompt-length", str(max_prompt), "--max-length", str(max_len))
    c = summary["counts"]
    assert c["splits"]["train"] == {"read": 4, "kept": 3, "dropped_long_prompt": 1, "truncated_response": 1}
    assert c["splits"]["valid"] == {"read": 2, "kept": 1, "dropped_long_prompt": 1, "truncated_response": 1}
    assert (c["read"], c["kept"], c["dropped_long_prompt"], c["truncated_response"], c["bad_lines"]) == (6, 4, 2, 2, 0)

    out = tmp_path / "out" / "gpt2"
    ds = IndexedDataset(out / "train_0")
    rows = _read_jsonl(out / "train.jsonl")
    assert [r["category"] for r in rows] == ["a", "c", "a"]  # kept ones, in order
    full_resp = tok.encode(long_resp["output"], add_special_tokens=False)
    assert ds.response(1).tolist() == full_resp[: max_len - 1 - p_len["long_resp"]]
    assert ds.sizes[1] + 1 == max_len
    assert rows[1]["output"] == long_resp["output"]  # jsonl keeps the full response
    assert tok.decode(ds.response(0)) == short["output"] and tok.decode(ds.prompt(0)) == rows[0]["prompt"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == c and meta["max_length"] == max_len and meta["template"] == "instruction"


# ------------------------------------------------------------------------------------------------------------------
# input errors


GOOD = {"instruction": "Add 1 and 2.", "input": "", "output": "3", "category": "math"}
BAD_LINES = {
    "bad_json": ('{"instruction": "x", "output": ', "Expecting value"),
    "not_object": ('["instruction", "output"]', "expected a JSON object, got list"),
    "missing_field": ('{"instruction": "x", "answer": "y"}', "missing fields ['output']"),
    "non_string": ('{"instruction": "x", "output": 7}', "'output' must be a string"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_malformed_line_names_file_and_line(kind: str, tmp_path: Path, tiny_tokenizer_dir: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "data"
    train = _write_jsonl(data / "train.jsonl", [GOOD, GOOD])
    with train.open("a", encoding="utf-8") as f:
        f.write(BAD_LINES[kind][0] + "\n")
    _write_jsonl(data / "valid.jsonl", [GOOD])
    out = tmp_path / "processed"
    argv = ["--data-dir", str(data), "--processed-data-dir", str(out), "--model-path", str(tiny_tokenizer_dir)]

    with pytest.raises(pdd.DataError, match=f"{train}:3: ") as e:
        pdd.process(pdd.parse_args(argv))
    assert BAD_LINES[kind][1] in str(e.value) and "\n" not in str(e.value)
    assert pdd.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{train}:3:" in err
    assert not out.exists()


def test_skip_bad_lines_counts(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    data = tmp_path / "data"
    lines = [json.dumps(GOOD), BAD_LINES["bad_json"][0], "", json.dumps(GOOD), BAD_LINES["non_string"][0],
             json.dumps({"instruction": "Dolly style", "context": "ctx", "response": "ok"})]
    (data).mkdir()
    (data / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _write_jsonl(data / "valid.jsonl", [GOOD, "not an object"])
    summary = _run(data, tmp_path / "out", tiny_tokenizer_dir, "--skip-bad-lines")
    c = summary["counts"]
    assert c["bad_lines"] == 3 and c["splits"]["train"]["kept"] == 3 and c["splits"]["valid"]["kept"] == 1
    assert [m.split(": ")[0] for m in summary["bad_line_messages"]] == [
        f"{data / 'train.jsonl'}:2", f"{data / 'train.jsonl'}:5", f"{data / 'valid.jsonl'}:2"]


def test_empty_and_missing_inputs(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("\n  \n", encoding="utf-8")
    _write_jsonl(data / "valid.jsonl", [GOOD])
    with pytest.raises(pdd.DataError, match=r"train\.jsonl: no examples"):
        _run(data, tmp_path / "out", tiny_tokenizer_dir)
    (data / "train.jsonl").write_text(BAD_LINES["bad_json"][0] + "\n", encoding="utf-8")
    with pytest.raises(pdd.DataError, match="no examples"):  # all lines skipped is still an empty input
        _run(data, tmp_path / "out", tiny_tokenizer_dir, "--skip-bad-lines")
    with pytest.raises(pdd.DataError, match=r"nowhere: data directory not found"):
        _run(tmp_path / "nowhere", tmp_path / "out", tiny_tokenizer_dir)
    with pytest.raises(pdd.DataError, match=r"no_model.*make_tiny_models\.py"):
        _run(data, tmp_path / "out", tmp_path / "no_model")
    assert not (tmp_path / "out").exists()


def test_failure_after_tokenizing_leaves_nothing(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    data = tmp_path / "data"
    _write_jsonl(data / "train.jsonl", [GOOD])
    _write_jsonl(data / "valid.jsonl", [GOOD])
    out = tmp_path / "a" / "b"
    with pytest.raises(pdd.DataError, match="raise --max-prompt-length"):  # every prompt is too long
        _run(data, out, tiny_tokenizer_dir, "--max-prompt-length", "3", "--max-length", "8")
    assert not (tmp_path / "a").exists()  # neither the temp dir nor the parents it created survive


# ------------------------------------------------------------------------------------------------------------------
# split modes


def test_raw_split_is_seeded_and_complete(tmp_path: Path, tiny_tokenizer_dir: Path, tiny_records: list) -> None:
    data = tmp_path / "data"
    _write_jsonl(data / "raw.jsonl", tiny_records[:40])
    outs = []
    for name, seed in [("s1", "7"), ("s2", "7"), ("s3", "8")]:
        _run(data, tmp_path / name, tiny_tokenizer_dir, "--dev-num", "10", "--seed", seed)
        outs.append({s: _read_jsonl(tmp_path / name / "gpt2" / f"{s}.jsonl") for s in ("train", "valid")})
    assert len(outs[0]["valid"]) == 10 and len(outs[0]["train"]) == 30
    assert outs[0] == outs[1] and outs[0]["valid"] != outs[2]["valid"]
    everything = sorted(r["instruction"] + r["input"] for r in outs[0]["train"] + outs[0]["valid"])
    assert everything == sorted(clean_text(r["instruction"]) + r["input"] for r in tiny_records[:40])
    with pytest.raises(pdd.DataError, match="--dev-num 40 must be between 1 and 39"):
        _run(data, tmp_path / "s4", tiny_tokenizer_dir, "--dev-num", "40")


def test_eval_set_only_prompt_and_workers(tmp_path: Path, tiny_tokenizer_dir: Path, tiny_records: list,
                                          tok) -> None:
    data = tmp_path / "data"
    _write_jsonl(data / "valid.jsonl", tiny_records[:30])
    _run(data, tmp_path / "one", tiny_tokenizer_dir, "--eval-set", "--dev-num", "0")
    _run(data, tmp_path / "two", tiny_tokenizer_dir, "--eval-set", "--dev-num", "0", "--data-process-workers", "2")
    s = _run(data, tmp_path / "po", tiny_tokenizer_dir, "--eval-set", "--dev-num", "25", "--only-prompt")
    for name in ("one", "two"):
        assert sorted(p.name for p in (tmp_path / name / "gpt2").iterdir()) == [
            "meta.json", "valid.jsonl", "valid_0.bin", "valid_0.idx"]
    for suffix in ("valid_0.bin", "valid_0.idx", "valid.jsonl"):  # the pool keeps the order
        assert (tmp_path / "one" / "gpt2" / suffix).read_bytes() == (tmp_path / "two" / "gpt2" / suffix).read_bytes()
    rows = _read_jsonl(tmp_path / "one" / "gpt2" / "valid.jsonl")
    assert [r["output"] for r in rows] == [clean_text(r["output"]) for r in tiny_records[:30]]  # file order

    assert s["counts"]["kept"] == 25
    po = IndexedDataset(tmp_path / "po" / "gpt2" / "valid_0")
    assert (po.sizes == po.prompt_lengths).all()  # prompts only
    po_rows = _read_jsonl(tmp_path / "po" / "gpt2" / "valid.jsonl")
    assert po_rows[3]["output"] == rows[3]["output"] and tok.decode(po.prompt(3)) == po_rows[3]["prompt"]


def test_rerun_replaces_output(tmp_path: Path, tiny_tokenizer_dir: Path, tiny_records: list) -> None:
    data = tmp_path / "data"
    _write_jsonl(data / "raw.jsonl", tiny_records[:20])
    _run(data, tmp_path / "out", tiny_tokenizer_dir, "--dev-num", "5")
    s = _run(data, tmp_path / "out", tiny_tokenizer_dir, "--dev-num", "8")
    assert s["replaced_existing"] and len(IndexedDataset(tmp_path / "out" / "gpt2" / "valid_0")) == 8
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["gpt2"]  # no temp or backup dirs left


# ------------------------------------------------------------------------------------------------------------------
# real data


def _check_decodes_back(out: Path, split: str, tok) -> int:
    ds = IndexedDataset(out / f"{split}_0")
    rows = _read_jsonl(out / f"{split}.jsonl")
    assert len(ds) == len(rows) > 0
    for i, row in enumerate(rows):
        assert tok.decode(ds.prompt(i)) == row["prompt"]
        full = tok.encode(row["output"], add_special_tokens=False)
        assert ds.response(i).tolist() == full[: len(ds.response(i))]
        if len(ds.response(i)) == len(full):
            assert tok.decode(ds.response(i)) == row["output"]
    return len(rows)


def test_real_mini_instruct_and_self_inst(tmp_path: Path, tiny_models: dict) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present: real-data test skipped")
    gpt2, qwen2 = tiny_models["gpt2"]["teacher"], tiny_models["qwen2"]["teacher"]
    s = _run(SHARED_DATA / "mini-instruct", tmp_path / "mi", gpt2, "--dev-num", "0")
    tok = AutoTokenizer.from_pretrained(gpt2)
    out = tmp_path / "mi" / "gpt2"
    assert _check_decodes_back(out, "train", tok) == s["counts"]["splits"]["train"]["kept"]
    assert _check_decodes_back(out, "valid", tok) == s["counts"]["splits"]["valid"]["kept"]
    assert s["counts"]["read"] == 2542 and s["counts"]["kept"] > 2000
    raw = iter(_read_jsonl(SHARED_DATA / "mini-instruct" / "valid.jsonl"))
    for row in _read_jsonl(out / "valid.jsonl"):  # kept rows are the raw ones in file order, minus dropped ones
        r = next(r for r in raw if clean_text(r["instruction"]).rstrip() == row["instruction"])
        assert row["output"] == r["output"].replace("\r\n", "\n")  # equal to the raw text up to line endings

    s = _run(SHARED_DATA / "self-inst", tmp_path / "si", qwen2, "--eval-set", "--chat-template",
             "--max-prompt-length", "384")
    assert list(s["counts"]["splits"]) == ["valid"] and s["counts"]["read"] == 252
    n = _check_decodes_back(tmp_path / "si" / "qwen2", "valid", AutoTokenizer.from_pretrained(qwen2))
    assert n == s["counts"]["kept"]
    assert _read_jsonl(tmp_path / "si" / "qwen2" / "valid.jsonl")[0]["prompt"].startswith("<|im_start|>user\n")


# ------------------------------------------------------------------------------------------------------------------
# pretraining corpus


def _pretrain(path: Path, out: Path, model: Path, *flags: str) -> dict:
    return pdp.process(pdp.parse_args(
        ["--data-path", str(path), "--processed-data-dir", str(out), "--model-path", str(model), *flags]))


def test_pretrain_packing_round_trip(tmp_path: Path, tiny_tokenizer_dir: Path, tiny_records: list, tok) -> None:
    # one line per document: every newline inside a document is written as the marker
    docs = [f"{r['instruction']}\n{r['output']}".replace("\r\n", "\n").replace("\n", "<@x(x!>")
            for r in tiny_records[:60]]
    corpus = tmp_path / "corpus" / "data.txt"
    corpus.parent.mkdir()
    corpus.write_text("\n".join(docs[:30]) + "\n\n" + "\n".join(docs[30:]) + "\n", encoding="utf-8")
    s = _pretrain(corpus, tmp_path / "out", tiny_tokenizer_dir, "--max-length", "64", "--dev-num", "3",
                  "--data-process-workers", "2")

    stream: list[int] = []
    for d in docs:
        stream += tok.encode(clean_text(d.replace("<@x(x!>", "\n")), add_special_tokens=False) + [tok.eos_token_id]
    n_chunks = len(stream) // 64
    c = s["counts"]
    assert (c["docs"], c["tokens"], c["chunks"], c["valid_chunks"]) == (60, len(stream), n_chunks, 3)
    assert c["dropped_tail_tokens"] == len(stream) - 64 * n_chunks

    out = tmp_path / "out" / "gpt2"
    valid, train = IndexedDataset(out / "valid_0"), IndexedDataset(out / "train_0")
    assert len(valid) == 3 and len(train) == n_chunks - 3
    assert (valid.sizes == 64).all() and (train.prompt_lengths == 0).all()
    packed = np.concatenate([valid[i] for i in range(len(valid))] + [train[i] for i in range(len(train))])
    assert packed.tolist() == stream[: 64 * n_chunks]
    assert "\n" in tok.decode(valid[0]) and "<@x(x!>" not in tok.decode(valid[0])


def test_pretrain_errors(tmp_path: Path, tiny_tokenizer_dir: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "data.txt"
    corpus.write_bytes(b"a fine document\n\xff\xfe broken bytes\nanother document\n")
    out = tmp_path / "out"
    argv = ["--data-path", str(corpus), "--processed-data-dir", str(out), "--model-path", str(tiny_tokenizer_dir)]
    assert pdp.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{corpus}:2: not valid UTF-8" in err

    s = _pretrain(corpus, out, tiny_tokenizer_dir, "--skip-bad-lines", "--max-length", "2", "--dev-num", "1")
    assert s["counts"]["bad_lines"] == 1 and s["counts"]["docs"] == 2

    with pytest.raises(pdd.DataError, match="all taken by --dev-num"):  # too little text for the valid split
        _pretrain(corpus, tmp_path / "out2", tiny_tokenizer_dir, "--skip-bad-lines", "--dev-num", "20")
    assert not (tmp_path / "out2").exists()
    corpus.write_text("\n   \n", encoding="utf-8")
    with pytest.raises(pdd.DataError, match="no documents"):
        _pretrain(corpus, tmp_path / "out3", tiny_tokenizer_dir)
    with pytest.raises(pdd.DataError, match="corpus file not found"):
        _pretrain(tmp_path / "missing.txt", tmp_path / "out3", tiny_tokenizer_dir)
