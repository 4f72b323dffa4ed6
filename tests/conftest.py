"""Shared, session-scoped fixtures: a small instruction corpus and the tiny teacher/student checkpoints of every family.

The checkpoints are built ONCE per test session (one shared byte-level BPE tokenizer, randomly initialised models
sized by configs/models/tiny-*.json) by the same code path as ``python tools/make_tiny_models.py``:

* ``tiny_records``      list of raw instruction records (instruction/input/output/category), deterministic
* ``tiny_corpus_path``  those records as a JSONL file
* ``tiny_models_dir``   the directory holding ``tiny-<family>-<role>/`` checkpoints
* ``tiny_models``       ``{"gpt2": {"teacher": Path, "student": Path}, "opt": ..., "llama": ..., "qwen2": ...}``
* ``tiny_tokenizer_dir`` a checkpoint directory to load the shared tokenizer from (gpt2 teacher)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
from pathlib import Path
from typing import Any, Iterator

import pytest

from tools.make_tiny_models import FAMILIES, ROLES, checkpoint_dir, make_tiny_models

_WORDS = (
    "river stone cloud apple garden window music paper silver forest lamp ocean bridge candle market winter "
    "yellow quiet rapid gentle ancient bright narrow heavy"
).split()
_NAMES = ("Ana", "Björn", "Chloé", "Dmitri", "Émile", "Fatima", "Gustav", "Hana")


def make_records(n: int, seed: int) -> list[dict]:
    """Deterministic mix of instruction records: with and without input, lists, arithmetic, accents, CRLF."""
    rng = random.Random(seed)
    records = []
    for i in range(n):
        words = rng.sample(_WORDS, rng.randint(2, 6))
        kind = i % 5
        if kind == 0:
            rec = {"instruction": "Reverse the order of these words.", "input": " ".join(words),
                   "output": " ".join(reversed(words)), "category": "reverse"}
        elif kind == 1:
            a, b = rng.randint(0, 999), rng.randint(0, 999)
            rec = {"instruction": f"What is {a} plus {b}?", "input": "", "output": f"{a} plus {b} is {a + b}.",
                   "category": "addition"}
        elif kind == 2:
            name = rng.choice(_NAMES)
            rec = {"instruction": f"Write a short note to {name} about the {words[0]}.", "input": "",
                   "output": f"Dear {name},\r\nThe {words[0]} by the {words[1]} is {rng.choice(_WORDS)} today.\r\n"
                             f"Best wishes.", "category": "note"}
        elif kind == 3:
            rec = {"instruction": "Sort the words alphabetically.", "input": ", ".join(words),
                   "output": ", ".join(sorted(words)), "category": "sort"}
        else:
            rec = {"instruction": "Summarize the text in one sentence.",
                   "input": " ".join(rng.choice(_WORDS) for _ in range(30)) + ".",
                   "output": f"It is about the {words[0]} and the {words[-1]}.", "category": "summary"}
        records.append(rec)
    return records


@pytest.fixture(scope="session")
def tiny_records() -> list[dict]:
    return make_records(200, seed=0)


@pytest.fixture(scope="session")
def tiny_corpus_path(tmp_path_factory: pytest.TempPathFactory, tiny_records: list[dict]) -> Path:
    path = tmp_path_factory.mktemp("tiny_corpus") / "train.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in tiny_records), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_corpus_path: Path) -> Path:
    out = tmp_path_factory.mktemp("tiny_models")
    make_tiny_models([tiny_corpus_path], FAMILIES, vocab_size=1024, out_dir=out, seed=1)
    return out


@pytest.fixture(scope="session")
def tiny_models(tiny_models_dir: Path) -> dict[str, dict[str, Path]]:
    return {f: {r: checkpoint_dir(tiny_models_dir, f, r) for r in ROLES} for f in FAMILIES}


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tiny_models: dict[str, dict[str, Path]]) -> Path:
    return tiny_models["gpt2"]["teacher"]


# ------------------------------------------------------------------------------------------------------------------
# Fixtures of the SFT / evaluation tests (trainer, evaluate.py, launch scripts).
#
# * ``processed_tiny_root``  ``<root>/synth/full/<family>/``: 200 train / 40 valid synthetic records processed with
#                            every family's tokenizer (one shared tokenizer; the directory name is the model_type)
# * ``processed_tiny``       ``<root>/synth/full/gpt2``
# * ``sft_tiny_run``         a finished 30-step SFT run of the tiny gpt2 student on ``processed_tiny`` (eval-gen)
# * ``parrot_data_root``     ``<root>/parrot/full/gpt2``: train responses are all ``PARROT_RESPONSE``; valid keeps
#                            varied references, so a model that learnt the parrot answer scores partial Rouge-L
# * ``parrot_ckpt``          the tiny gpt2 student after learning the parrot answer (its generations are words, not
#                            noise — what a Rouge-L test needs to be able to fail)
# * ``in_process``           (function) context for in-process training/evaluation, see ``in_process_run``
# * ``subprocess_env``       os.environ without process-group variables, for launching entry points and scripts
# Helpers: ``tiny_train_args``, ``process_raw``, ``write_jsonl``, ``read_metrics``.
# ------------------------------------------------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[1]
# prompt + response + EOS <= 128 tokens; every synthetic prompt fits in 100 with the tiny tokenizer, none is dropped.
TINY_PROCESS_FLAGS = ("--max-length", "128", "--max-prompt-length", "100")
PARROT_RESPONSE = "It is about the rivers and the quiet stones."
_DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
              "ROLE_RANK", "TORCHELASTIC_RUN_ID")


@contextlib.contextmanager
def in_process_run() -> Iterator[None]:
    """Context for training or evaluating inside the test process.

    * One intra-op thread: the tiny models' kernels are far too small to split, and on a busy 2-core machine a second
      thread only adds synchronisation (measured: 20 small steps 0.5 s on 1 thread, 8 s on 2).
    * The process-group variables that ``distill.dist.init_distributed`` sets for its world of one (RANK, MASTER_PORT,
      ...) are removed again afterwards: the group itself lives on, and a later child process (a launch script, any
      torchrun) must not inherit a port that group still holds.
    """
    import torch

    threads = torch.get_num_threads()
    saved = {k: os.environ.get(k) for k in _DIST_VARS}
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def in_process() -> Iterator[None]:
    with in_process_run():
        yield


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def process_raw(raw_dir: Path, processed_data_dir: Path, model_path: Path, *flags: str) -> Path:
    """Runs tools/process_data_dolly.py in-process; returns ``<processed_data_dir>/<model_type>``."""
    from tools import process_data_dolly as pdd

    summary = pdd.process(pdd.parse_args(["--data-dir", str(raw_dir), "--processed-data-dir", str(processed_data_dir),
                                          "--model-path", str(model_path), *TINY_PROCESS_FLAGS, *flags]))
    return Path(summary["output_dir"])


def tiny_train_args(model: Path, data: Path, save: Path, *extra: str) -> list[str]:
    """train_sft.py flags shared by the in-process runs: CPU, fp32 ZeRO-0, no TensorBoard, every step logged."""
    return ["--model-path", str(model), "--data-dir", str(data), "--save", str(save),
            "--deepspeed-config", str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp32.json"),
            "--max-length", "128", "--max-prompt-length", "100", "--report-to", "none", "--log-interval", "1",
            *extra]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="session")
def processed_tiny_root(tiny_models: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tools.make_synthetic_data import generate

    train, valid = generate(200, 40, seed=1)
    base = tmp_path_factory.mktemp("processed_tiny")
    raw = base / "raw"
    write_jsonl(raw / "train.jsonl", train)
    write_jsonl(raw / "valid.jsonl", valid)
    root = base / "processed"
    for family in tiny_models:
        process_raw(raw, root / "synth" / "full", tiny_models[family]["teacher"])
    return root


@pytest.fixture(scope="session")
def processed_tiny(processed_tiny_root: Path) -> Path:
    return processed_tiny_root / "synth" / "full" / "gpt2"


@pytest.fixture(scope="session")
def sft_tiny_run(tiny_models: dict[str, dict[str, Path]], processed_tiny: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 steps, lr 1e-3 (cosine), batch 8; evaluation with generation at steps 15 and 30, which also saves them."""
    import train_sft

    save = tmp_path_factory.mktemp("sft_tiny_run") / "run"
    with in_process_run():
        train_sft.main(tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, save, "--total-iters", "30",
                                       "--lr", "1e-3", "--batch-size", "8", "--eval-gen", "--eval-interval", "15",
                                       "--save-interval", "15", "--dev-num", "16", "--eval-batch-size", "16",
                                       "--max-new-tokens", "8"))
    return save


@pytest.fixture(scope="session")
def parrot_data_root(tiny_models: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Processed-data root (``<root>/parrot/full/gpt2``). Some valid records carry extra references — a stemmed
    variant of the parrot answer among them — so max-over-references and stemming change the scores."""
    base = tmp_path_factory.mktemp("parrot")
    train = [{**r, "output": PARROT_RESPONSE} for r in make_records(64, seed=3)]
    valid = make_records(24, seed=4)
    for i in range(0, len(valid), 3):
        valid[i] = {**valid[i], "references": [valid[i]["output"], "It was about a river and quiet stone."]}
    write_jsonl(base / "raw" / "train.jsonl", train)
    write_jsonl(base / "raw" / "valid.jsonl", valid)
    root = base / "processed"
    process_raw(base / "raw", root / "parrot" / "full", tiny_models["gpt2"]["teacher"])
    return root


@pytest.fixture(scope="session")
def parrot_ckpt(tiny_models: dict[str, dict[str, Path]], parrot_data_root: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    import train_sft

    save = tmp_path_factory.mktemp("parrot_run") / "run"
    with in_process_run():
        train_sft.main(tiny_train_args(tiny_models["gpt2"]["student"], parrot_data_root / "parrot" / "full" / "gpt2",
                                       save, "--total-iters", "20", "--lr", "1e-2", "--lr-schedule", "constant",
                                       "--clip-grad", "0", "--batch-size", "8", "--log-interval", "20", "--dev-num",
                                       "8", "--eval-batch-size", "8"))
    return save / "20"



@functools.lru_cache(maxsize=None)
def _resolved_precision_env() -> dict[str, str]:
    """What ``scripts/lib.sh`` exports after asking ``python -m distill.hardware`` (PRECISION=auto), so launched
    scripts inherit the answer instead of each paying a torch import for it."""
    from distill import hardware

    choice = hardware.resolve("auto")
    return {"DISTILL_HW_FOR": "auto", "NUM_GPUS": str(choice.hardware.num_gpus),
            "PRECISION_RESOLVED": choice.precision, "PRECISION_INFO": choice.line()}


@pytest.fixture()
def subprocess_env() -> dict[str, str]:
    """Environment for launching entry points: the in-process runs of this session set RANK/MASTER_PORT/... for
    their world of one; a child (torchrun, a launch script) must not inherit them, or it would reuse a bound port."""
    env = {k: v for k, v in os.environ.items() if k not in _DIST_VARS}
    env.update(_resolved_precision_env())  # the launchers' hardware probe, answered once for the session
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


# ------------------------------------------------------------------------------------------------------------------
# Helpers shared by the training tests: saved weights, their difference, child processes.
def weights(ckpt: Path) -> dict:
    """The student weights a checkpoint saved (``model.safetensors``)."""
    from safetensors.torch import load_file

    return load_file(str(ckpt / "model.safetensors"))


def max_abs_diff(a: dict, b: dict) -> float:
    """Largest element-wise difference of two state dicts with the same keys (float64)."""
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def free_port() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return str(sock.getsockname()[1])


def run_checked(cmd: list, env: dict, timeout: int = 300) -> Any:
    """Runs ``cmd`` from the repository root; its output is in the failure message when it does not exit 0."""
    import subprocess

    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# ------------------------------------------------------------------------------------------------------------------
# The built-in pretraining corpus (tools/make_synthetic_data.py) processed for the tiny gpt2 tokenizer.
TINY_LM_DOCS = 400  # ~29k words: ~400 chunks of 128 tokens with the test tokenizer, processed in under a second


@pytest.fixture(scope="session")
def processed_tiny_lm(tiny_models: dict[str, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/synth_pretrain/full/gpt2``: ``TINY_LM_DOCS`` corpus documents (seed 1) written as the generator
    writes them (``<root>/data/synth_pretrain/data.txt``) and packed into 128-token chunks, 4 of them ``valid``."""
    from tools import process_data_pretrain as pdp
    from tools.make_synthetic_data import corpus_text, pretrain_documents

    base = tmp_path_factory.mktemp("processed_tiny_lm")
    corpus = base / "data" / "synth_pretrain" / "data.txt"
    corpus.parent.mkdir(parents=True)
    corpus.write_text(corpus_text(pretrain_documents(TINY_LM_DOCS, seed=1)), encoding="ascii")
    summary = pdp.process(pdp.parse_args(["--data-path", str(corpus), "--processed-data-dir",
                                          str(base / "synth_pretrain" / "full"), "--model-path",
                                          str(tiny_models["gpt2"]["teacher"]), "--max-length", "128",
                                          "--dev-num", "4"]))
    return Path(summary["output_dir"])


def refused(main: Any, argv: list, capsys: Any) -> str:
    """The one error line of a tool's ``main(argv)`` that refuses its input (exit status 2) before any work."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err
