"""The built-in pretraining corpus of tools/make_synthetic_data.py: MiniLLM's one-document-per-line format, read back
unchanged by tools/process_data_pretrain.py, deterministic, true to the world, free of validation answers, packed
into chunks, and the pretraining term of train_distill.py (--lm-data-dir) on it."""
from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO_ROOT, TINY_LM_DOCS, read_metrics, tiny_train_args
from tools import make_synthetic_data as msd
from tools import process_data_pretrain as pdp

TOOL = REPO_ROOT / "tools" / "make_synthetic_data.py"


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def default_corpus() -> list[str]:
    """The corpus the default command writes (3000 documents, seed 1)."""
    return msd.pretrain_documents(msd.DEFAULT_NUM_PRETRAIN, seed=1)


# ---------------------------------------------------------------------------------------------------- file format


def test_cli_writes_one_document_per_line_that_the_processing_tool_reads_back_unchanged(tmp_path: Path) -> None:
    res = _run_cli("--out-dir", str(tmp_path / "synth"), "--num-train", "200", "--num-valid", "60",
                   "--num-pretrain", "300", "--seed", "5")
    assert res.returncode == 0, res.stderr
    corpus = tmp_path / "synth_pretrain" / "data.txt"  # the default: <out-dir>_pretrain/data.txt
    assert f"wrote {corpus} (300 documents" in res.stdout
    raw = corpus.read_bytes()
    raw.decode("ascii")  # plain ASCII, like the instruction data
    lines = raw.decode("ascii").split("\n")
    assert lines[-1] == "" and len(lines) == 301 and all(lines[:-1])
    docs = msd.pretrain_documents(300, seed=5)
    # The release's writer (MiniLLM tools/get_openwebtext.py) gives the same line for each document ...
    assert lines[:-1] == [re.sub(r"\n+", msd.DOC_NEWLINE, d) for d in docs]
    # ... and the processing tool, whose marker it is, turns the lines back into exactly these documents.
    assert msd.DOC_NEWLINE == pdp.DOC_NEWLINE == "<@x(x!>"
    read, n_bad, _ = pdp.read_documents(corpus, skip_bad_lines=False)
    assert read == docs and n_bad == 0
    assert [msd.from_corpus_line(line) for line in lines[:-1]] == docs
    # multi-paragraph: a title line and at least two paragraphs; no empty paragraph
    assert all(len(d.split("\n")) >= 3 and "" not in d.split("\n") for d in docs)
    assert not [p for p in corpus.parent.iterdir() if p.name.endswith(".tmp")]


def test_to_corpus_line_refuses_what_the_format_cannot_hold() -> None:
    for bad in ("a\n\nb", f"a{msd.DOC_NEWLINE}b", "a\r\nb"):
        with pytest.raises(AssertionError):
            msd.to_corpus_line(bad)


def test_corpus_is_deterministic_in_its_seed_and_leaves_the_instruction_data_unchanged(tmp_path: Path) -> None:
    a = msd.pretrain_documents(200, seed=3)
    random.seed(123)  # the global RNG plays no part
    assert msd.pretrain_documents(200, seed=3) == a
    assert msd.pretrain_documents(200, seed=4) != a
    assert msd.pretrain_documents(0, seed=3) == []
    outs = {}
    for name, extra in (("a", ()), ("b", ()), ("none", ("--num-pretrain", "0"))):
        res = _run_cli("--out-dir", str(tmp_path / name), "--num-train", "100", "--num-valid", "40",
                       "--num-pretrain", "120", *extra)
        assert res.returncode == 0, res.stderr
        outs[name] = {f: (tmp_path / name / f).read_bytes() for f in ("train.jsonl", "valid.jsonl")}
    assert (tmp_path / "a_pretrain" / "data.txt").read_bytes() == (tmp_path / "b_pretrain" / "data.txt").read_bytes()
    assert not (tmp_path / "none_pretrain").exists()  # --num-pretrain 0: no corpus, no folder
    assert outs["a"] == outs["b"] == outs["none"]  # the corpus has its own random stream


def test_every_kind_of_document_comes_in_its_share() -> None:
    docs = msd.pretrain_documents(1000, seed=1)
    total = sum(msd.PRETRAIN_KINDS.values())
    letters = sum(d.startswith("Dear ") for d in docs)
    assert letters == round(1000 * msd.PRETRAIN_KINDS["letter"] / total)
    assert len(set(docs)) > 0.95 * len(docs)  # varied, not a handful of documents repeated


# ------------------------------------------------------------------------------------------------- the world's facts


def test_the_corpus_states_every_fact_of_the_world_and_only_true_ones(default_corpus: list[str]) -> None:
    world = msd.build_world()
    by_name = {c.name: c for c in world}
    text = "\n".join(default_corpus)
    # Every country has a document naming all five of its facts (the profiles walk through the countries).
    for c in world:
        assert any(all(v in d for v in (c.name, c.capital, c.language, c.currency, c.animal, c.colour))
                   for d in default_corpus), c.name
    # Whatever a fact sentence says is the world's fact: a document never mixes up two countries.
    # (pattern, attribute, whether the country is the second group); "[Tt]he" also finds the second half of a
    # comparison ("..., but the flag of Momimor is grey").
    checks = [(r"[Tt]he capital of (\w+) is (\w+)[.,]", "capital", False),
              (r"(\w+), the capital of (\w+)[.,]", "capital", True),
              (r"[Tt]he flag of (\w+) is (\w+)\b", "colour", False),
              (r"(\w+) flies a plain (\w+) flag", "colour", False),
              (r"[Tt]he national animal of (\w+) is the (\w+)", "animal", False),
              (r"the (\w+) is the national animal of (\w+)", "animal", True),
              (r"The money of (\w+) is the (\w+)", "currency", False),
              (r"The (\w+) is the currency of (\w+)", "currency", True),
              (r"The people of (\w+) speak (\w+)", "language", False),
              (r"(\w+) is the language of (\w+)", "language", True)]
    for pattern, attr, reverse in checks:
        found = [m.groups()[::-1] if reverse else m.groups() for m in re.finditer(pattern, text)]
        assert len(found) > 100, pattern  # each phrasing is used throughout the corpus
        wrong = [(c, v) for c, v in found if by_name[c].attr(attr) != v]
        assert wrong == [], (pattern, wrong[:3])


# ------------------------------------------------------------------------------------------ no validation answers


def test_no_validation_answer_occurs_verbatim_in_the_corpus(default_corpus: list[str]) -> None:
    """The default data (seed 1) and another seed: no validation reference of 3+ words, nor a 3+ word sentence of
    one, occurs in the corpus of the same seed; shorter references are bare facts and numbers."""
    _, valid = msd.generate(5000, 500, seed=1)
    text = "\n".join(default_corpus)
    refs = {r for rec in valid for r in rec["references"]}
    # By brute force (what the generator's own check must agree with): what does occur are one- and two-word
    # answers, a name or value of the world ("Tukonish.", "The fox.") or a word.
    hits = [r for r in refs if r in text]
    assert hits and all(len(r.split()) < msd.LEAK_MIN_WORDS for r in hits), hits
    sentences = {s for r in refs for s in re.split(r"(?<=[.!?])\s+", r) if len(s.split()) >= msd.LEAK_MIN_WORDS}
    assert len(sentences) > 500 and [s for s in sentences if s in text] == []
    assert msd.leaked_references(default_corpus, valid) == []
    _, valid2 = msd.generate(5000, 500, seed=2)
    assert msd.leaked_references(msd.pretrain_documents(msd.DEFAULT_NUM_PRETRAIN, seed=2), valid2) == []


def test_the_leak_check_finds_a_planted_answer() -> None:
    _, valid = msd.generate(400, 200, 1)
    two_hop = next(r["output"] for r in valid if r["category"] == "two_hop")
    describe = next(r["references"][3] for r in valid if r["category"] == "describe_entity")
    sentence = describe.split(". ")[1] + "."
    docs = msd.pretrain_documents(100, seed=1)
    assert msd.leaked_references(docs, valid) == []
    assert msd.leaked_references(docs + [f"Title\nSome text. {two_hop} More text."], valid) == [two_hop]
    assert msd.leaked_references(docs + [f"Title\n{sentence}"], valid) == [sentence]


# -------------------------------------------------------------------------------------------------- CLI and layout


@pytest.mark.parametrize("args, flag", [
    (["--num-pretrain", "-1"], "--num-pretrain"),
    (["--num-pretrain", "many"], "--num-pretrain"),
    (["--pretrain-file", "{tmp}"], "--pretrain-file"),              # a directory
    (["--pretrain-file", "{tmp}/file.txt/data.txt"], "--pretrain-file"),  # under a file
])
def test_cli_bad_corpus_arguments_are_one_line_errors_before_anything_is_written(
        tmp_path: Path, args: list[str], flag: str) -> None:
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "out"
    res = _run_cli("--out-dir", str(out), "--num-train", "20", "--num-valid", "20",
                   *[a.format(tmp=tmp_path) for a in args])
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert flag in res.stderr and "error" in res.stderr
    assert not (out / "train.jsonl").exists() and not (tmp_path / "out_pretrain").exists()


def test_layout_matches_the_processing_tools_defaults(tmp_path: Path) -> None:
    """data/synth -> data/synth_pretrain/data.txt, which the processing tool (and so the family launchers, which
    pass DATA_PATH as --data-path) packs into processed_data/synth_pretrain/full/<family>, beside and never over the
    instruction data's processed_data/synth/full/<family>."""
    assert msd.default_pretrain_path(Path("data/synth")) == Path("data/synth_pretrain/data.txt")
    args = pdp.parse_args(["--data-path", "data/synth_pretrain/data.txt", "--model-path", "m"])
    assert args.processed_data_dir == "processed_data/synth_pretrain/full"
    args = pdp.parse_args(["--data-name", "synth_pretrain", "--model-path", "m"])
    assert (args.data_path, args.processed_data_dir) == ("data/synth_pretrain/data.txt",
                                                         "processed_data/synth_pretrain/full")
    res = _run_cli("--out-dir", str(tmp_path / "x"), "--num-train", "20", "--num-valid", "20", "--num-pretrain", "7",
                   "--pretrain-file", str(tmp_path / "corpus" / "owt.txt"))
    assert res.returncode == 0, res.stderr
    assert len((tmp_path / "corpus" / "owt.txt").read_text().splitlines()) == 7


# ------------------------------------------------------------------------------------------ processing and training


def test_the_corpus_packs_into_chunks_of_its_documents_tokens(processed_tiny_lm: Path, tiny_models: dict) -> None:
    from data_utils.datasets import LMDataset
    from distill.models import load_tokenizer

    meta = json.loads((processed_tiny_lm / "meta.json").read_text())
    assert processed_tiny_lm.parts[-3:] == ("synth_pretrain", "full", "gpt2")
    c = meta["counts"]
    assert c["docs"] == TINY_LM_DOCS and c["valid_chunks"] == 4 and c["train_chunks"] > 100
    tok = load_tokenizer(str(tiny_models["gpt2"]["teacher"]))
    stream = [t for d in msd.pretrain_documents(TINY_LM_DOCS, seed=1)
              for t in [*tok.encode(d, add_special_tokens=False), tok.eos_token_id]]
    valid, train = LMDataset(processed_tiny_lm, "valid"), LMDataset(processed_tiny_lm, "train")
    chunks = [valid[i]["response"] for i in range(len(valid))] + [train[i]["response"] for i in range(len(train))]
    assert all(len(ch) == 128 for ch in chunks) and len(chunks) == len(stream) // 128
    np.testing.assert_array_equal(np.concatenate(chunks), np.asarray(stream[: len(chunks) * 128]))
    assert c["dropped_tail_tokens"] == len(stream) % 128


def test_a_short_distillation_run_trains_on_the_corpus(tiny_models: dict, processed_tiny: Path,
                                                       processed_tiny_lm: Path, tmp_path: Path, in_process) -> None:
    import train_distill

    run = tmp_path / "run"
    train_distill.main(tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, run, "--teacher-model-path",
                                       str(tiny_models["gpt2"]["teacher"]), "--total-iters", "2", "--batch-size", "4",
                                       "--dev-num", "4", "--eval-batch-size", "4", "--lm-data-dir",
                                       str(processed_tiny_lm)))
    logged = [m for m in read_metrics(run) if "train/lm" in m]
    assert [m["step"] for m in logged] == [1, 2]
    # A random student on text of a 1024-token vocabulary: about ln(1024) ~ 6.9 nats per token.
    assert all(math.isfinite(m["train/lm"]) and 3.0 < m["train/lm"] < 12.0 for m in logged)
    m = logged[-1]
    assert m["train/loss"] == pytest.approx(0.5 * m["train/ce"] + 0.5 * m["train/kd"] + m["train/lm"], rel=1e-4)


def test_the_family_launcher_processes_the_built_in_corpus_with_data_path(
        processed_tiny_lm: Path, tiny_models: dict, tmp_path: Path, subprocess_env: dict) -> None:
    """``DATA_PATH=<the corpus> bash scripts/gpt2/tools/process_data_pretrain.sh`` gives the tool's own output."""
    from tests.conftest import run_checked

    corpus = processed_tiny_lm.parents[2] / "data" / "synth_pretrain" / "data.txt"
    env = {**subprocess_env, "DATA_PATH": str(corpus), "CKPT": str(tiny_models["gpt2"]["teacher"]),
           "PROCESSED_DIR": str(tmp_path / "full"), "WORKERS": "1"}
    run_checked(["bash", "scripts/gpt2/tools/process_data_pretrain.sh", "--max-length", "128", "--dev-num", "4"], env)
    for name in ("train_0.bin", "train_0.idx", "valid_0.bin", "valid_0.idx"):
        assert (tmp_path / "full" / "gpt2" / name).read_bytes() == (processed_tiny_lm / name).read_bytes(), name
