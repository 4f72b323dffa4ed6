"""Provenance and safe loading (issue #17): what is refused, what is warned, and where.

* Processed data records its tokenizer's fingerprint (meta.json ``tokenizer_sha256``); training (``--data-dir`` and
  ``--lm-data-dir``), evaluation and SeqKD generation refuse data of another tokenizer — one of the same vocabulary
  size, made by permuting the tiny tokenizer's ids — before the model loads; data without a fingerprint is warned.
* A model directory without tokenizer files, or whose tokenizer loads with one token, is an error (never a 1-token
  tokenizer that trains and evaluates to Rouge-L 0).
* Only complete checkpoints load: config + every weight file + tokenizer, and no interrupted ``<save>/<step>/``.
* Index files are validated when opened: token ids below the vocabulary, the ``.bin`` dtype that meta.json implies.
* Checkpoint code runs only with ``--trust-remote-code``; weights load from safetensors or ``weights_only=True``.
"""
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_utils.indexed_dataset import IndexedDataset, IndexedDatasetBuilder
from data_utils.processing import (DataError, check_data_tokenizer, check_training_data, load_tokenizer,
                                   tokenizer_fingerprint)
from distill.config import InputError, ModelConfig, parse_configs
from distill.inputs import check_adapter_dir, check_model_dir
from tests.conftest import REPO_ROOT, TINY_PROCESS_FLAGS, make_records, process_raw, tiny_train_args, write_jsonl

FP32 = str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp32.json")


def one_line(text: str) -> str:
    """The single ``error: ...`` line of a refused command's stderr (asserting there is exactly one)."""
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, text
    return errors[0]


def copy_model(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*drop) if drop else None)
    return dst


def permute_tokenizer(model_dir: Path, seed: int = 0) -> None:
    """Same tokens, same size, same special ids — but every other token gets another id."""
    path = model_dir / "tokenizer.json"
    tj = json.loads(path.read_text(encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    special = {t["id"] for t in tj["added_tokens"]}
    movable = sorted((i, t) for t, i in vocab.items() if i not in special)
    ids = [i for i, _ in movable]
    random.Random(seed).shuffle(ids)
    tj["model"]["vocab"] = {**{t: i for t, i in vocab.items() if i in special},
                            **{t: new for (_, t), new in zip(movable, ids)}}
    path.write_text(json.dumps(tj, ensure_ascii=False), encoding="utf-8")


class ModelLoading(Exception):
    """Raised by a stand-in for distill.models.load_model: the run got past its data checks."""


@pytest.fixture()
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise ModelLoading(str(args[0]) if args else "")

    monkeypatch.setattr("distill.models.load_model", refuse)


@pytest.fixture(scope="module")
def prov(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny gpt2 student; a copy with a permuted tokenizer (same size); the same 24 records processed with each
    (instruction data and a pretraining corpus)."""
    from tools import process_data_pretrain as pdp

    base = tmp_path_factory.mktemp("provenance")
    student = tiny_models["gpt2"]["student"]
    other = copy_model(student, base / "permuted-student")
    permute_tokenizer(other)
    write_jsonl(base / "raw" / "train.jsonl", make_records(16, seed=5))
    write_jsonl(base / "raw" / "valid.jsonl", make_records(8, seed=6))
    corpus = base / "corpus.txt"
    corpus.write_text("".join(r["instruction"] + " " + r["output"].replace("\n", "<@x(x!>") + "\n"
                              for r in make_records(60, seed=7)), encoding="utf-8")
    out = {"student": student, "other": other, "base": base}
    for name, model in (("mine", student), ("theirs", other)):
        out[name] = process_raw(base / "raw", base / name / "full", model)
        pdp.process(pdp.parse_args(["--data-path", str(corpus), "--processed-data-dir", str(base / f"lm_{name}"),
                                    "--model-path", str(model), "--max-length", "32", "--dev-num", "2"]))
        out[f"lm_{name}"] = base / f"lm_{name}" / "gpt2"
    return out


# ------------------------------------------------------------------------------------------------------------------
# 1. fingerprints in meta.json, and the data check


def test_fingerprint_recorded_stable_and_tokenizer_specific(prov: dict, tmp_path: Path) -> None:
    from distill.models import load_tokenizer as load_for_training

    tok = load_tokenizer(prov["student"])
    fp = tokenizer_fingerprint(tok)
    for key in ("mine", "lm_mine"):  # process_data_dolly.py and process_data_pretrain.py
        meta = json.loads((prov[key] / "meta.json").read_text(encoding="utf-8"))
        assert meta["tokenizer_sha256"] == fp and meta["vocab_size"] == len(tok)
    # Training's loader (which sets a pad token) and a save_pretrained round trip (what every checkpoint holds) agree.
    assert tokenizer_fingerprint(load_for_training(str(prov["student"]))) == fp
    tok.save_pretrained(tmp_path / "saved")
    assert tokenizer_fingerprint(load_tokenizer(tmp_path / "saved")) == fp
    other = load_tokenizer(prov["other"])
    assert len(other) == len(tok) and tokenizer_fingerprint(other) != fp
    theirs = json.loads((prov["theirs"] / "meta.json").read_text(encoding="utf-8"))
    assert theirs["tokenizer_sha256"] == tokenizer_fingerprint(other)


def test_data_of_another_tokenizer_is_refused_with_both_named(prov: dict) -> None:
    tok = load_tokenizer(prov["student"])
    assert check_data_tokenizer(prov["mine"], tok, str(prov["student"])) is None
    with pytest.raises(DataError) as e:
        check_data_tokenizer(prov["theirs"], tok, str(prov["student"]))
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, InputError)
    assert f"--data-dir {prov['theirs']} was processed with another tokenizer" in msg
    assert str(prov["other"].resolve()) in msg and f"{prov['student']}'s" in msg
    assert "re-process it with the model's tokenizer: python tools/process_data_dolly.py" in msg


def test_data_without_fingerprint_is_warned_not_refused(prov: dict, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    old = shutil.copytree(prov["mine"], tmp_path / "old")
    meta = json.loads((old / "meta.json").read_text(encoding="utf-8"))
    del meta["tokenizer_sha256"]
    (old / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    tok = load_tokenizer(prov["student"])
    line = check_data_tokenizer(old, tok, str(prov["student"]))
    err = capsys.readouterr().err
    assert err == line + "\n" and line.startswith(f"warning: --data-dir {old}: meta.json records no tokenizer "
                                                  f"fingerprint")
    (old / "meta.json").unlink()  # hand-made data: no meta.json at all
    assert "no meta.json" in check_data_tokenizer(old, tok, str(prov["student"]), warn=None)
    assert capsys.readouterr().err == ""  # warn=None: returned, not printed (ranks other than the first)
    # Another vocabulary size is refused even without a fingerprint.
    meta["vocab_size"] = len(tok) + 1
    (old / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(DataError, match=rf"\(a vocabulary of {len(tok) + 1} tokens\) but .*has {len(tok)}; re-process"):
        check_data_tokenizer(old, tok, str(prov["student"]))


def test_training_refuses_other_tokenizer_data_before_the_model_loads(prov: dict, tmp_path: Path, in_process,
                                                                      no_model_load,
                                                                      capsys: pytest.CaptureFixture) -> None:
    import train_sft

    args = tiny_train_args(prov["student"], prov["theirs"], tmp_path / "run", "--total-iters", "1")
    with pytest.raises(SystemExit) as e:
        train_sft.main(args)
    assert e.value.code == 2
    assert f"--data-dir {prov['theirs']} was processed with another tokenizer" in one_line(capsys.readouterr().err)
    # The pretraining corpus of --lm-data-dir likewise, with its own tool named.
    args = tiny_train_args(prov["student"], prov["mine"], tmp_path / "run2", "--total-iters", "1",
                           "--lm-data-dir", str(prov["lm_theirs"]), "--lm-coef", "0.5")
    with pytest.raises(SystemExit) as e:
        train_sft.main(args)
    line = one_line(capsys.readouterr().err)
    assert e.value.code == 2 and f"--lm-data-dir {prov['lm_theirs']} was processed with another" in line
    assert "tools/process_data_pretrain.py" in line
    # Matching data gets past the check, to the model load.
    with pytest.raises(ModelLoading):
        train_sft.main(tiny_train_args(prov["student"], prov["mine"], tmp_path / "run3", "--total-iters", "1",
                                       "--lm-data-dir", str(prov["lm_mine"]), "--lm-coef", "0.5"))
    assert "warning: --data-dir" not in capsys.readouterr().err


def test_training_warns_on_data_without_fingerprint(prov: dict, tmp_path: Path) -> None:
    from types import SimpleNamespace

    old = shutil.copytree(prov["lm_mine"], tmp_path / "lm_old")
    meta = json.loads((old / "meta.json").read_text(encoding="utf-8"))
    del meta["tokenizer_sha256"]
    (old / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    cfg = SimpleNamespace(data_dir=str(prov["mine"]), lm_data_dir=str(old))
    lines = check_training_data(cfg, load_tokenizer(prov["student"]), str(prov["student"]), warn=False)
    assert len(lines) == 1 and lines[0].startswith(f"warning: --lm-data-dir {old}: meta.json records no tokenizer")


def test_evaluation_and_seqkd_refuse_other_tokenizer_data(prov: dict, tmp_path: Path, in_process, no_model_load,
                                                          capsys: pytest.CaptureFixture) -> None:
    from distill.evaluation import main as evaluate_main
    from distill.seqkd import check_tokenizer_matches

    with pytest.raises(SystemExit) as e:
        evaluate_main(["--model-path", str(prov["student"]), "--data-dir", str(prov["theirs"]),
                       "--save", str(tmp_path / "eval"), "--dev-num", "2"])
    assert e.value.code == 2
    assert f"--data-dir {prov['theirs']} was processed with another tokenizer" in one_line(capsys.readouterr().err)
    with pytest.raises(DataError, match="was processed with another tokenizer"):  # SeqKD's teacher reads the prompts
        check_tokenizer_matches(prov["theirs"], load_tokenizer(prov["student"]), str(prov["student"]))


# ------------------------------------------------------------------------------------------------------------------
# 2. tokenizer files, and the tokenizer after loading


def test_model_dir_without_tokenizer_files_is_refused(prov: dict, tmp_path: Path) -> None:
    bare = copy_model(prov["student"], tmp_path / "bare", drop=("tokenizer*",))
    with pytest.raises(InputError) as e:
        check_model_dir(str(bare))
    assert str(e.value).startswith(f"--model-path {bare}: no tokenizer files (tokenizer.json, or vocab.json + "
                                   f"merges.txt, or a sentencepiece tokenizer.model)")
    # What is accepted besides tokenizer.json: vocab + merges, or a sentencepiece model.
    (bare / "vocab.json").write_text("{}")
    with pytest.raises(InputError, match="no tokenizer files"):
        check_model_dir(str(bare))  # vocab alone is not enough
    (bare / "merges.txt").write_text("")
    assert check_model_dir(str(bare)) == str(bare)
    sp = copy_model(prov["student"], tmp_path / "sp", drop=("tokenizer*",))
    (sp / "tokenizer.model").write_bytes(b"\0")
    assert check_model_dir(str(sp)) == str(sp)


def test_adapter_tokenizer_falls_back_to_its_base(prov: dict, tmp_path: Path) -> None:
    bare_base = copy_model(prov["student"], tmp_path / "base", drop=("tokenizer*",))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(bare_base)}))
    with pytest.raises(InputError, match="no weight files"):
        check_model_dir(str(adapter))
    (adapter / "adapter_model.bin").write_bytes(b"x")
    with pytest.raises(InputError, match=rf"\(base of the adapter {adapter}\) {bare_base}: no tokenizer files"):
        check_model_dir(str(adapter))  # the adapter has no tokenizer: its base's is the one used, and it has none
    for name in ("tokenizer.json", "tokenizer_config.json"):  # the adapter's own tokenizer wins, as load_tokenizer's
        shutil.copy(prov["student"] / name, bare_base / name)
    assert check_model_dir(str(adapter)) == str(adapter)
    (adapter / "tokenizer_config.json").write_text("{}")
    with pytest.raises(InputError, match=rf"--model-path {adapter}: no tokenizer files"):
        check_model_dir(str(adapter))
    assert check_adapter_dir(str(adapter)) == str(adapter)  # --peft-path: weights only, the base is given apart


def test_one_token_tokenizer_is_refused_after_loading(prov: dict, tmp_path: Path, in_process, no_model_load,
                                                      capsys: pytest.CaptureFixture) -> None:
    """The user's reproduction: a directory without tokenizer files loads as a 1-token tokenizer, which a save then
    writes as tokenizer.json — so the file check passes and the loaded tokenizer itself must be refused."""
    from transformers import AutoTokenizer

    from distill.evaluation import main as evaluate_main
    from distill.models import load_tokenizer as load_for_training

    bare = copy_model(prov["student"], tmp_path / "one", drop=("tokenizer*",))
    AutoTokenizer.from_pretrained(bare).save_pretrained(bare)
    assert check_model_dir(str(bare)) == str(bare)
    with pytest.raises(InputError, match=rf"^{bare}: the tokenizer loaded from it has 1 token\(s\) \(its vocabulary "
                                         rf"files are missing or unreadable\); copy the tokenizer files"):
        load_for_training(str(bare))
    with pytest.raises(DataError, match="has 1 token"):
        load_tokenizer(bare)  # the processing tools' loader
    with pytest.raises(SystemExit) as e:
        evaluate_main(["--model-path", str(bare), "--data-dir", str(prov["mine"]), "--save", str(tmp_path / "ev")])
    assert e.value.code == 2 and "has 1 token(s)" in one_line(capsys.readouterr().err)


def test_processing_refuses_model_dir_without_tokenizer(prov: dict, tmp_path: Path) -> None:
    from tools import process_data_dolly as pdd

    bare = copy_model(prov["student"], tmp_path / "bare", drop=("tokenizer*",))
    with pytest.raises(DataError, match=rf"--model-path {bare}: no tokenizer files"):
        pdd.process(pdd.parse_args(["--data-dir", str(prov["base"] / "raw"), "--processed-data-dir",
                                    str(tmp_path / "out"), "--model-path", str(bare), *TINY_PROCESS_FLAGS]))
    assert not (tmp_path / "out").exists()


def test_command_lines_exit_2_before_torch(prov: dict, tmp_path: Path, subprocess_env: dict) -> None:
    """train_sft.py on a directory without tokenizer, evaluate.py and run_eval.sh on an interrupted checkpoint: one
    line, exit code 2, and nothing loaded — not even torch."""
    bare = copy_model(prov["student"], tmp_path / "bare", drop=("tokenizer*",))
    proc = subprocess.run([sys.executable, "train_sft.py", *tiny_train_args(bare, prov["mine"], tmp_path / "run",
                                                                            "--epochs", "1")],
                          cwd=REPO_ROOT, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"--model-path {bare}: no tokenizer files" in one_line(proc.stderr)
    assert not (tmp_path / "run").exists()

    run = tmp_path / "sft"
    copy_model(prov["student"], run / "10")
    (run / "10" / "trainer_state.json").write_text("{}")
    copy_model(prov["student"], run / "20")  # an interrupted save: no trainer_state.json
    (run / "log.txt").write_text("")
    code = ("import sys\nfrom distill.evaluation import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    print('torch loaded' if 'torch' in sys.modules else 'no torch'); raise")
    proc = subprocess.run([sys.executable, "-c", code, "--model-path", str(run / "20"), "--data-dir",
                           str(prov["mine"]), "--save", str(tmp_path / "ev")],
                          cwd=REPO_ROOT, env=subprocess_env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout.strip() == "no torch"
    assert one_line(proc.stderr) == (f"error: --model-path {run / '20'}: incomplete checkpoint (a save was "
                                     f"interrupted: no trainer_state.json); use {run / '10'} (the newest complete "
                                     f"one)")
    env = {**subprocess_env, "CKPT": str(run / "20"), "SAVE_PATH": str(tmp_path / "ev2")}
    proc = subprocess.run(["bash", "scripts/gpt2/eval/run_eval.sh"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert one_line(proc.stderr).startswith(f"error: CKPT {run / '20'}: incomplete checkpoint (a save was interrupted")
    assert not (tmp_path / "ev").exists() and not (tmp_path / "ev2").exists()


# ------------------------------------------------------------------------------------------------------------------
# 3. complete checkpoints only


def test_weights_must_be_complete(prov: dict, tmp_path: Path) -> None:
    m = copy_model(prov["student"], tmp_path / "m")
    weights = (m / "model.safetensors").read_bytes()
    (m / "model.safetensors").write_bytes(weights[:-10])  # a copy or save cut short
    with pytest.raises(InputError, match=rf"--model-path {m / 'model.safetensors'}: {len(weights) - 10} bytes but "
                                         rf"its header describes {len(weights)} \(truncated or damaged\); the "
                                         rf"checkpoint is incomplete"):
        check_model_dir(str(m))
    (m / "model.safetensors").write_bytes(b"\x10\0\0\0\0\0\0\0{")
    with pytest.raises(InputError, match="truncated"):
        check_model_dir(str(m))
    (m / "model.safetensors").unlink()
    with pytest.raises(InputError, match=rf"{m}: no weight files \(model.safetensors / "):
        check_model_dir(str(m))
    # A sharded checkpoint: every shard its index lists must be there (and whole).
    (m / "model-00001-of-00002.safetensors").write_bytes(weights)
    (m / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(InputError, match=r"1 of the 2 weight shards listed in model.safetensors.index.json are "
                                         r"missing \(model-00002-of-00002.safetensors\)"):
        check_model_dir(str(m))
    (m / "model-00002-of-00002.safetensors").write_bytes(weights)
    assert check_model_dir(str(m)) == str(m)
    bin_only = copy_model(prov["student"], tmp_path / "bin", drop=("model.safetensors",))
    (bin_only / "pytorch_model.bin").write_bytes(b"x")  # accepted: loaded with weights_only=True
    assert check_model_dir(str(bin_only)) == str(bin_only)
    cfg_less = copy_model(prov["student"], tmp_path / "nocfg", drop=("config.json",))
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        check_model_dir(str(cfg_less))


def test_interrupted_trainer_checkpoint_is_refused(prov: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    for step, complete in ((5, True), (10, True), (15, False)):
        copy_model(prov["student"], run / str(step))
        if complete:
            (run / str(step) / "trainer_state.json").write_text("{}")
    (run / "best").symlink_to("5")
    with pytest.raises(InputError) as e:
        check_model_dir(str(run / "15"), "--teacher-model-path")
    assert str(e.value) == (f"--teacher-model-path {run / '15'}: incomplete checkpoint (a save was interrupted: no "
                            f"trainer_state.json); use {run / '10'} (the newest complete one) or the run's best, "
                            f"{run / 'best'}")
    assert check_model_dir(str(run / "10")) == str(run / "10")
    (run / "best").unlink()
    (run / "best").symlink_to("15")  # a link is followed to its step
    with pytest.raises(InputError, match="best: incomplete checkpoint"):
        check_model_dir(str(run / "best"))
    for step in (5, 10):
        shutil.rmtree(run / str(step))
    with pytest.raises(InputError, match=f"no complete checkpoint in {run}; train again"):
        check_model_dir(str(run / "15"))  # the sibling link alone marks a run; no complete one is left
    # A model directory that merely has a number as its name, outside any run, is an ordinary one.
    plain = copy_model(prov["student"], tmp_path / "models" / "7")
    assert check_model_dir(str(plain)) == str(plain)
    # The teacher of a distillation run gets the same check, before anything loads.
    import train_distill

    with pytest.raises(SystemExit) as ex:
        train_distill.main(tiny_train_args(prov["student"], prov["mine"], tmp_path / "kd", "--total-iters", "1",
                                           "--teacher-model-path", str(run / "15")))
    assert ex.value.code == 2 and "--teacher-model-path" in one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------------------------------------------------
# 4. index files


def _dataset_with_meta(tmp_path: Path, meta_vocab: int, ids: list[int], dtype_vocab: int | None = None) -> Path:
    d = tmp_path / "data"
    d.mkdir(exist_ok=True)
    with IndexedDatasetBuilder(d / "train_0", dtype_vocab or meta_vocab) as b:
        b.add(ids[:2], ids[2:])
        b.add([], [1, 2, 3])
    (d / "meta.json").write_text(json.dumps({"vocab_size": meta_vocab}))
    return d / "train_0"


def test_token_ids_are_checked_against_the_vocabulary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = _dataset_with_meta(tmp_path, 1024, [5, 6, 7, 1023])
    assert len(IndexedDataset(prefix)) == 2
    with pytest.raises(DataError, match=rf"^{prefix}.bin: token id 1023 is outside the tokenizer's 576 tokens "
                                        rf"\(ids 0..575\); the file is corrupted .* re-process the data"):
        IndexedDataset(prefix, vocab_size=576)
    # A corrupted byte in .bin (here the last token, found in the last chunk of a chunked scan).
    raw = bytearray((tmp_path / "data" / "train_0.bin").read_bytes())
    raw[-2:] = np.uint16(4000).tobytes()
    (tmp_path / "data" / "train_0.bin").write_bytes(bytes(raw))
    monkeypatch.setattr("data_utils.indexed_dataset._SCAN_CHUNK", 3)
    with pytest.raises(DataError, match=r"token id 4000 is outside meta.json's vocabulary of 1024 \(ids 0..1023\)"):
        IndexedDataset(prefix)


def test_bin_dtype_must_match_meta(tmp_path: Path) -> None:
    prefix = _dataset_with_meta(tmp_path, 70000, [1, 2, 3], dtype_vocab=1024)  # stored as uint16
    with pytest.raises(DataError, match=rf"^{prefix}.bin: token ids stored as uint16, but meta.json's vocabulary of "
                                        rf"70000 is stored as uint32; .* re-process"):
        IndexedDataset(prefix)


# ------------------------------------------------------------------------------------------------------------------
# 5. remote code and weights


def test_custom_code_needs_the_flag(prov: dict, tmp_path: Path) -> None:
    m = copy_model(prov["student"], tmp_path / "custom")
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, "model_type": "my-own-lm",
                                               "auto_map": {"AutoModelForCausalLM": "modeling_mine.MyLM"}}))
    with pytest.raises(InputError) as e:
        check_model_dir(str(m))
    assert str(e.value) == (f"--model-path {m}: its config.json needs custom code from the checkpoint (auto_map "
                            f"['AutoModelForCausalLM']), which is not run by default; pass --trust-remote-code if "
                            f"you trust it")
    assert check_model_dir(str(m), trust_remote_code=True) == str(m)
    # A model type transformers implements keeps working without the flag (transformers uses its own code then).
    (m / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModelForCausalLM": "x.Y"}}))
    assert check_model_dir(str(m)) == str(m)
    (model_cfg,) = parse_configs([ModelConfig], ["--model-path", "x"])
    assert model_cfg.trust_remote_code is False
    (model_cfg,) = parse_configs([ModelConfig], ["--model-path", "x", "--trust-remote-code"])
    assert model_cfg.trust_remote_code is True


def test_loaders_pass_safe_options(prov: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import distill.models as models

    seen = {}

    class Fake:
        @staticmethod
        def from_pretrained(path, **kwargs):
            seen.update(kwargs)
            raise RuntimeError("stop")

    monkeypatch.setattr(models, "AutoModelForCausalLM", Fake)
    with pytest.raises(RuntimeError, match="stop"):
        models.load_model(str(prov["student"]))
    assert seen["trust_remote_code"] is False and seen["weights_only"] is True
    with pytest.raises(RuntimeError, match="stop"):
        models.load_model(str(prov["student"]), trust_remote_code=True)
    assert seen["trust_remote_code"] is True


def test_every_from_pretrained_and_torch_load_is_safe() -> None:
    """A static check of the repository: every ``from_pretrained`` names ``trust_remote_code`` (PeftModel's read
    adapters only) and every ``torch.load`` passes ``weights_only=True`` (calls quoted in docs, ````x(...)````, are
    not calls)."""
    bad = []
    # The repository's code: not the run outputs a user's runs leave in the ignored folders (DeepSpeed writes its own
    # zero_to_fp32.py into every checkpoint).
    outputs = ("results/", "runs/", "checkpoints/", "processed_data/", "data/")
    for path in sorted(REPO_ROOT.glob("**/*.py")):
        rel = path.relative_to(REPO_ROOT).as_posix()
        if rel.startswith(("tests/", *outputs)) or "/." in f"/{rel}":
            continue
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"(?<!``)(\w+)\.from_pretrained\(([^()]|\([^()]*\))*\)", text):
            if m.group(1) != "PeftModel" and "trust_remote_code" not in m.group(0):
                bad.append(f"{rel}: {m.group(0)[:80]}")
        for m in re.finditer(r"(?<!``)torch\.load\(([^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in m.group(0):
                bad.append(f"{rel}: {m.group(0)[:80]}")
    assert not bad, bad
