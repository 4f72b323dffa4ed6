"""Tiny model families: save/reload, forward pass, one shared tokenizer, idempotent and atomic building."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from tools.make_tiny_models import FAMILIES, checkpoint_dir, main, make_tiny_models

ARCHS = {"gpt2": "GPT2LMHeadModel", "opt": "OPTForCausalLM", "llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}
SAMPLES = [
    "Below is an instruction that describes a task.\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:\n5",
    "Ünïcödé café — 日本語 🙂\n\n\ttabs  and  spaces",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_reloads_and_runs(family: str, tiny_models: dict[str, dict[str, Path]]) -> None:
    teacher_dir, student_dir = tiny_models[family]["teacher"], tiny_models[family]["student"]
    tok_t, tok_s = AutoTokenizer.from_pretrained(teacher_dir), AutoTokenizer.from_pretrained(student_dir)
    for text in SAMPLES:
        ids = tok_t.encode(text, add_special_tokens=False)
        assert ids == tok_s.encode(text, add_special_tokens=False)
        assert tok_t.decode(ids) == text
    assert (tmp := tok_t.eos_token_id) is not None and tok_t.pad_token_id == tmp == tok_t.bos_token_id

    n_params = {}
    for role, path in tiny_models[family].items():
        assert (path / "model.safetensors").is_file()
        config = AutoConfig.from_pretrained(path)
        assert config.architectures == [ARCHS[family]]
        assert config.vocab_size >= len(tok_t)
        assert config.eos_token_id == config.pad_token_id == tok_t.eos_token_id
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        assert type(model).__name__ == ARCHS[family]
        ids = torch.tensor([tok_t.encode(SAMPLES[0], add_special_tokens=False)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        assert logits.shape == (1, ids.shape[1], config.vocab_size)
        assert torch.isfinite(logits).all()
        n_params[role] = model.num_parameters()
    assert n_params["teacher"] > 4 * n_params["student"]


def test_one_tokenizer_for_all_families(tiny_models: dict[str, dict[str, Path]]) -> None:
    toks = {f: AutoTokenizer.from_pretrained(tiny_models[f]["teacher"]) for f in FAMILIES}
    ref = toks["gpt2"]
    for family, tok in toks.items():
        assert len(tok) == len(ref)
        for text in SAMPLES:
            assert tok.encode(text, add_special_tokens=False) == ref.encode(text, add_special_tokens=False), family
    # the chat markers are single special tokens, and only the qwen2 family carries a chat template
    assert len(ref.encode("<|im_start|><|im_end|>", add_special_tokens=False)) == 2
    assert [f for f, t in toks.items() if t.chat_template] == ["qwen2"]


def test_rerun_skips_then_overwrite_rebuilds(tmp_path: Path, tiny_corpus_path: Path) -> None:
    rows = make_tiny_models([tiny_corpus_path], ["gpt2"], vocab_size=512, out_dir=tmp_path, seed=3)
    assert [r.status for r in rows] == ["built", "built"]
    ckpt = checkpoint_dir(tmp_path, "gpt2", "student")
    before = load_file(ckpt / "model.safetensors")
    mtime = (ckpt / "model.safetensors").stat().st_mtime_ns

    rows = make_tiny_models([tiny_corpus_path], ["gpt2"], vocab_size=512, out_dir=tmp_path, seed=3)
    assert [r.status for r in rows] == ["skipped (exists)"] * 2
    assert (ckpt / "model.safetensors").stat().st_mtime_ns == mtime

    rows = make_tiny_models([tiny_corpus_path], ["gpt2"], vocab_size=512, out_dir=tmp_path, seed=3, overwrite=True)
    assert [r.status for r in rows] == ["replaced"] * 2
    after = load_file(ckpt / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # seeded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-gpt2-student", "tiny-gpt2-teacher"]  # no temp left


def test_sizes_come_from_config_json(tiny_models: dict[str, dict[str, Path]]) -> None:
    repo = Path(__file__).resolve().parents[1]
    for family in FAMILIES:
        for role, path in tiny_models[family].items():
            wanted = json.loads((repo / "configs" / "models" / f"tiny-{family}-{role}.json").read_text())
            got = json.loads((path / "config.json").read_text())
            for key, value in wanted.items():
                if key != "rope_theta":  # transformers stores it inside rope_parameters
                    assert got[key] == value, (family, role, key)


def test_missing_corpus_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "nope" / "train.jsonl"
    assert main(["--corpus", str(missing), "--out-dir", str(tmp_path / "ck"), "--families", "gpt2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err and "python tools/make_synthetic_data.py" in err
    assert not (tmp_path / "ck").exists()
