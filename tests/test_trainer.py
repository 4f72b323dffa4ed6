"""The DeepSpeed training loop (distill/trainer.py via train_sft.py) on tiny models, CPU.

Runs are in-process (``train_sft.main``) except the 2-process one: the process group is created once and reused, and
DeepSpeed's one-off op build is cached. Every run is a handful of steps of the tiny gpt2 student.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import train_sft
from data_utils.datasets import IGNORE_INDEX, InstructionDataset, LMCollator
from distill.models import is_adapter_dir, load_model, load_tokenizer
from distill.trainer import STATE_FILE, MicroBatchStream, complete_checkpoints
from tests.conftest import (REPO_ROOT, free_port, max_abs_diff, read_metrics, run_checked, tiny_train_args,
                            weights)

MAX_LENGTH = 128  # the --max-length of tiny_train_args
pytestmark = pytest.mark.usefixtures("in_process")  # see conftest.in_process_run


# ------------------------------------------------------------------------------------------------------------------
# helpers


def token_ce(model: torch.nn.Module, tokenizer, items: list[dict]) -> tuple[float, int]:
    """(summed response-token cross-entropy, response-token count) of ``items`` under ``model``, in one batch.

    Computed here from the collated, pre-shifted batch with plain F.cross_entropy — independent of the trainer's loss
    code — with the attention mask, so right padding cannot leak into real positions."""
    batch = LMCollator(tokenizer.pad_token_id, tokenizer.eos_token_id, MAX_LENGTH)(items)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # [B, T, V]
    labels = batch["labels"]  # [B, T], -100 off the response
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), labels.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return float(total), int((labels != IGNORE_INDEX).sum())


def valid_ce(model_dir: Path, data_dir: Path, num: int) -> float:
    """Token-mean validation cross-entropy of a saved model (or LoRA adapter) on the first ``num`` examples."""
    model = load_model(str(model_dir)).eval()
    tokenizer = load_tokenizer(str(model_dir))
    valid = InstructionDataset(data_dir, "valid", num=num)
    total, count = token_ce(model, tokenizer, [valid[i] for i in range(len(valid))])
    return total / count


def train_entries(run: Path) -> list[dict]:
    return [m for m in read_metrics(run) if "train/ce" in m]


def eval_entries(run: Path) -> list[dict]:
    return [m for m in read_metrics(run) if "valid/ce" in m]


def run_nodes(cmd: list[str], envs: list[dict[str, str]], logs: Path, timeout: int = 300) -> list[str]:
    """Runs ``cmd`` once per environment, concurrently (one per "node"); returns each one's output. When one fails
    or the time is up, the others are stopped too — their whole process groups: bash, torchrun and its workers."""
    logs.mkdir(parents=True, exist_ok=True)
    procs, files = [], []
    for i, env in enumerate(envs):
        files.append(open(logs / f"node{i}.log", "w+", encoding="utf-8"))
        procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=files[-1], stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))

    def stop_all() -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):  # torchrun passes SIGTERM on to its workers
            for proc in procs:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, sig)
                    except ProcessLookupError:
                        pass
            try:
                for proc in procs:
                    proc.wait(timeout=15)
                return
            except subprocess.TimeoutExpired:
                continue

    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [proc.poll() for proc in procs]  # every one, each time
            if all(c == 0 for c in codes) or any(c not in (None, 0) for c in codes) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        stop_all()
    outputs = []
    for f in files:
        f.seek(0)
        outputs.append(f.read())
        f.close()
    codes = [proc.returncode for proc in procs]
    assert codes == [0] * len(procs), f"{' '.join(cmd)}: exit codes {codes}" + "".join(
        f"\n--- node {i}:\n{out[-3000:]}" for i, out in enumerate(outputs))
    return outputs


# ------------------------------------------------------------------------------------------------------------------
# learning, evaluation, best checkpoint


def test_sft_loss_decreases(sft_tiny_run: Path, processed_tiny: Path, tiny_models: dict) -> None:
    train = train_entries(sft_tiny_run)
    assert [m["step"] for m in train] == list(range(1, 31))
    first, last = train[0]["train/ce"], sum(m["train/ce"] for m in train[-3:]) / 3
    assert last < 0.9 * first, (first, last)
    # Validation: the untrained student, scored here, against the trained one as the trainer scored it at step 30.
    before = valid_ce(tiny_models["gpt2"]["student"], processed_tiny, num=16)
    after = eval_entries(sft_tiny_run)[-1]
    assert after["step"] == 30
    assert after["valid/ce"] < before - 0.5, (before, after["valid/ce"])
    # The saved step-30 weights are the trained weights, and valid/ce is the token mean over the validation set.
    assert valid_ce(sft_tiny_run / "30", processed_tiny, num=16) == pytest.approx(after["valid/ce"], rel=1e-5)


def test_eval_gen_logs_rouge_and_best_points_at_a_saved_step(sft_tiny_run: Path, tmp_path: Path) -> None:
    evals = eval_entries(sft_tiny_run)
    assert [m["step"] for m in evals] == [15, 30]
    for m in evals:
        assert 0.0 <= m["valid/rougeL"] <= 100.0 and 0.0 <= m["valid/exact_match"] <= 100.0
        assert 0 <= m["valid/gen_tokens"] <= 8  # --max-new-tokens 8
    best = json.loads((sft_tiny_run / "best.json").read_text())
    scores = {m["step"]: m["valid/rougeL"] for m in evals}
    top = max(scores.values())
    assert best["metric"] == "valid/rougeL" and best["value"] == top
    assert best["step"] == min(s for s, v in scores.items() if v == top)  # the earliest among equals
    link = sft_tiny_run / "best"
    assert link.is_symlink() and os.readlink(link) == str(best["step"])  # relative: the run directory can move
    assert (link / STATE_FILE).is_file() and (link / "model.safetensors").is_file()
    assert complete_checkpoints(sft_tiny_run) == [15, 30]
    # --keep-optimizer-states 1 (default): only the newest checkpoint keeps its DeepSpeed state.
    assert not (sft_tiny_run / "15" / "ds_state").exists() and (sft_tiny_run / "30" / "ds_state").is_dir()
    # tools/select_best_checkpoint.py, from the logged Rouge-L, agrees (run on a copy: it rewrites best.json).
    from tools.select_best_checkpoint import main as select_best

    copy = tmp_path / "run"
    shutil.copytree(sft_tiny_run, copy, symlinks=True)
    assert select_best([str(copy)])["step"] == best["step"]
    assert os.readlink(copy / "best") == str(best["step"])


# ------------------------------------------------------------------------------------------------------------------
# checkpoints and resume


def test_complete_checkpoints_ignore_unfinished_saves(tmp_path: Path) -> None:
    for step, complete in ((5, True), (10, False), (20, True)):
        (tmp_path / str(step)).mkdir()
        if complete:
            (tmp_path / str(step) / STATE_FILE).write_text("{}")
    (tmp_path / "notes").mkdir()
    (tmp_path / "best").symlink_to("5")
    assert complete_checkpoints(tmp_path) == [5, 20]
    assert complete_checkpoints(tmp_path / "missing") == []


def test_kill_and_resume_equals_uninterrupted(tiny_models: dict, processed_tiny: Path, tmp_path: Path) -> None:
    common = ("--total-iters", "20", "--save-interval", "10", "--keep-optimizer-states", "2",
              "--gradient-accumulation-steps", "2", "--batch-size", "2", "--lr", "1e-3", "--dev-num", "4",
              "--eval-batch-size", "4")
    student = tiny_models["gpt2"]["student"]
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    train_sft.main(tiny_train_args(student, processed_tiny, run_a, *common))
    assert (run_a / "10" / "ds_state").is_dir() and (run_a / "20" / "ds_state").is_dir()  # both kept
    # B: killed while saving step 20 — step 10 complete, step 20 written but without trainer_state.json.
    shutil.copytree(run_a / "10", run_b / "10")
    shutil.copytree(run_a / "20", run_b / "20")
    (run_b / "20" / STATE_FILE).unlink()
    assert complete_checkpoints(run_b) == [10]
    train_sft.main(tiny_train_args(student, processed_tiny, run_b, *common, "--resume"))

    assert f"resumed from {run_b / '10'} (step 10)" in (run_b / "log.txt").read_text()
    train_a, train_b = train_entries(run_a), train_entries(run_b)
    assert [m["step"] for m in train_b] == list(range(11, 21))  # nothing before step 10 was redone
    assert [m["train/ce"] for m in train_b] == [m["train/ce"] for m in train_a[10:]]
    assert (run_b / "20" / STATE_FILE).is_file()
    assert max_abs_diff(weights(run_a / "10"), weights(run_a / "20")) > 1e-4  # steps 11..20 changed the weights
    assert max_abs_diff(weights(run_a / "20"), weights(run_b / "20")) == 0.0


# ------------------------------------------------------------------------------------------------------------------
# global token normalisation


def test_loss_is_normalised_over_the_global_batch(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                  subprocess_env: dict[str, str]) -> None:
    """batch 8 x 1, batch 4 x 2 accumulation, 2 processes x batch 4, and 2 nodes x 1 process x batch 4 (two launcher
    invocations on localhost, NODE_RANK 0 and 1, writing to one --save as on a shared filesystem) all train the same
    model."""
    student = tiny_models["gpt2"]["student"]
    common = ("--total-iters", "4", "--lr", "1e-3", "--lr-schedule", "constant", "--dev-num", "4",
              "--eval-batch-size", "4")
    runs = {"b8": tmp_path / "b8", "b4_gas2": tmp_path / "b4_gas2", "2proc_b4": tmp_path / "2proc_b4",
            "2node_b4": tmp_path / "2node_b4"}
    train_sft.main(tiny_train_args(student, processed_tiny, runs["b8"], *common, "--batch-size", "8"))
    train_sft.main(tiny_train_args(student, processed_tiny, runs["b4_gas2"], *common, "--batch-size", "4",
                                   "--gradient-accumulation-steps", "2"))
    run_checked([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                 free_port(), "train_sft.py",
                 *tiny_train_args(student, processed_tiny, runs["2proc_b4"], *common, "--batch-size", "4")],
                subprocess_env)
    # Through the launcher, as on two machines: the script's own training flags are overridden by the same flags
    # (passed through last, so they win), and --no-eval-gen turns off its generation.
    node_env = {**subprocess_env, "NNODES": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port(),
                "GPUS_PER_NODE": "1", "CKPT": str(student), "DATA_DIR": str(processed_tiny),
                "SAVE_PATH": str(runs["2node_b4"]),
                "DS_CONFIG": str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp32.json")}
    out = run_nodes(["bash", "scripts/gpt2/sft/sft_base.sh",
                     *tiny_train_args(student, processed_tiny, runs["2node_b4"], *common, "--batch-size", "4"),
                     "--no-eval-gen"], [{**node_env, "NODE_RANK": str(r)} for r in (0, 1)], tmp_path / "node_logs")
    for r in (0, 1):
        assert f"distill.launch --nnodes 2 --node_rank {r} --nproc_per_node 1" in out[r], out[r][-3000:]
    assert "world size 2" in (runs["2node_b4"] / "log.txt").read_text()
    args = {k: json.loads((runs[k] / "args.json").read_text()) for k in ("2proc_b4", "2node_b4")}
    for a in args.values():  # what only the script sets, and no 4-step run without generation uses
        for key in ("save", "epochs", "max_new_tokens", "eval_interval", "save_interval"):
            a.pop(key)
    assert args["2node_b4"] == args["2proc_b4"]

    # The step-1 global batch, as the data order gives it, under the untrained student.
    tokenizer = load_tokenizer(str(student))
    model = AutoModelForCausalLM.from_pretrained(student).eval()
    train_set = InstructionDataset(processed_tiny, "train")
    batch = next(MicroBatchStream(train_set, lambda items: items, 8, seed=10, rank=0, world_size=1))
    parts = {"all": batch, "micro 1": batch[:4], "micro 2": batch[4:], "rank 0": batch[0::2], "rank 1": batch[1::2]}
    ce = {k: token_ce(model, tokenizer, v) for k, v in parts.items()}
    global_mean = ce["all"][0] / ce["all"][1]
    lengths = {len(it["response"]) for it in batch}
    assert len(lengths) > 3, lengths  # response lengths differ, so a per-micro-batch mean would weigh tokens unevenly
    for a, b in (("micro 1", "micro 2"), ("rank 0", "rank 1")):
        naive = (ce[a][0] / ce[a][1] + ce[b][0] / ce[b][1]) / 2
        assert abs(naive - global_mean) > 1e-3, (a, b, naive, global_mean)

    logged = {k: train_entries(r) for k, r in runs.items()}
    for k, entries in logged.items():
        assert [m["step"] for m in entries] == [1, 2, 3, 4], k
        assert entries[0]["train/ce"] == pytest.approx(global_mean, abs=1e-5), k  # the global token mean
        for m, ref in zip(entries, logged["b8"]):
            assert m["train/ce"] == pytest.approx(ref["train/ce"], abs=1e-5), (k, m["step"])

    final = {k: weights(r / "4") for k, r in runs.items()}
    init = {k: v for k, v in load_file(str(student / "model.safetensors")).items() if k in final["b8"]}
    assert max_abs_diff(final["b8"], init) > 1e-3  # training moved the weights far beyond the tolerance
    for k in ("b4_gas2", "2proc_b4", "2node_b4"):
        assert max_abs_diff(final[k], final["b8"]) < 1e-5, k


# ------------------------------------------------------------------------------------------------------------------
# LoRA


def test_lora_trains_and_saves_only_the_adapter(tiny_models: dict, processed_tiny: Path, tmp_path: Path) -> None:
    student = tiny_models["gpt2"]["student"]
    run = tmp_path / "lora"
    train_sft.main(tiny_train_args(student, processed_tiny, run, "--peft", "lora", "--peft-lora-r", "4",
                                   "--peft-lora-dropout", "0", "--total-iters", "4", "--lr", "1e-2", "--batch-size",
                                   "4", "--dev-num", "8", "--eval-batch-size", "8"))
    ckpt = run / "4"
    assert is_adapter_dir(ckpt) and (ckpt / "adapter_model.safetensors").is_file()
    assert not (ckpt / "model.safetensors").exists()  # no full weights: the adapter only
    adapter = load_file(str(ckpt / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert max(float(v.abs().max()) for k, v in adapter.items() if "lora_B" in k) > 0  # lora_B starts at 0
    # Only the adapter was trainable.
    total, trainable = map(lambda s: int(s.replace(",", "")),
                           re.search(r"parameters: ([\d,]+) \(([\d,]+) trainable\)", (run / "log.txt").read_text())
                           .groups())
    assert trainable == sum(v.numel() for v in adapter.values()) and trainable < total

    # Base + saved adapter reproduce the trained model exactly (had base weights moved, they would be lost here).
    assert valid_ce(ckpt, processed_tiny, num=8) == pytest.approx(eval_entries(run)[-1]["valid/ce"], rel=1e-5)
    lora_model = load_model(str(ckpt)).eval()
    base_sd = AutoModelForCausalLM.from_pretrained(student).state_dict()
    for name, p in lora_model.get_base_model().state_dict().items():
        if "lora_" not in name:
            assert torch.equal(p, base_sd[name.replace(".base_layer", "")]), name

    # Merging gives a plain checkpoint with the adapter's outputs.
    merged_dir = tmp_path / "merged"
    load_model(str(ckpt), merge_adapter=True).save_pretrained(merged_dir)
    assert not is_adapter_dir(merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(student).eval()
    ids = torch.tensor([InstructionDataset(processed_tiny, "valid")[0]["prompt"].tolist()], dtype=torch.long)
    with torch.no_grad():
        out_lora, out_merged, out_base = (m(input_ids=ids).logits for m in (lora_model, merged, base))
    assert torch.allclose(out_merged, out_lora, atol=1e-5, rtol=0)
    assert float((out_lora - out_base).abs().max()) > 1e-3  # the adapter changed the model


# ------------------------------------------------------------------------------------------------------------------
# bad inputs: one line, exit status 2, nothing written


@pytest.mark.parametrize("case", ["missing data", "missing model", "epochs 0", "no model path", "no data dir",
                                  "too long"])
def test_bad_inputs_stop_with_one_line(case: str, tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    student, save = tiny_models["gpt2"]["student"], tmp_path / "run"
    argv, expected = {
        "missing data": (tiny_train_args(student, tmp_path / "nodata", save, "--total-iters", "1"),
                         [str(tmp_path / "nodata" / "train_0.bin"), "process_data_dolly"]),
        "missing model": (tiny_train_args(tmp_path / "nomodel", processed_tiny, save, "--total-iters", "1"),
                          ["--model-path", str(tmp_path / "nomodel"), "make_tiny_models.py"]),
        "epochs 0": (tiny_train_args(student, processed_tiny, save, "--epochs", "0"), ["--epochs", "positive"]),
        "no model path": (tiny_train_args(student, processed_tiny, save, "--total-iters", "1")[2:],
                          ["--model-path", "required"]),
        "no data dir": (tiny_train_args(student, processed_tiny, save, "--total-iters", "1")[:2]
                        + tiny_train_args(student, processed_tiny, save, "--total-iters", "1")[4:],
                        ["--data-dir", "required", "process_data_dolly"]),
        # the tiny GPT-2 has 512 learned positions: a 600-token row would fail inside the model
        "too long": (tiny_train_args(student, processed_tiny, save, "--total-iters", "1", "--max-length", "600"),
                     ["--max-length 600", "n_positions 512", "--max-length 512 or less"]),
    }[case]
    with pytest.raises(SystemExit) as e:
        train_sft.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in errors[0], (text, errors[0])
    assert not save.exists()  # stopped before anything was written


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is allowed on a GPU")
def test_fp16_on_cpu_is_an_input_error(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    ds = REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp16.json"
    argv = tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, tmp_path / "run", "--total-iters", "1")
    argv[argv.index("--deepspeed-config") + 1] = str(ds)
    with pytest.raises(SystemExit) as e:
        train_sft.main(argv)
    assert e.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--deepspeed-config" in errors[0] and "fp16 needs a GPU" in errors[0]
    assert not (tmp_path / "run").exists()


def test_sampled_validation_has_its_own_seed(tiny_models: dict, processed_tiny: Path, tmp_path: Path) -> None:
    """With --do-sample, step 2's validation samples the same answers whether or not step 1 was evaluated: its draws
    come from --seed and the step, not from whatever the training RNG streams hold by then."""
    common = ("--total-iters", "2", "--batch-size", "4", "--dev-num", "16", "--eval-batch-size", "16", "--eval-gen",
              "--do-sample", "--top-k", "0", "--max-new-tokens", "12")
    every, last = tmp_path / "every", tmp_path / "last"
    train_sft.main(tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, every, *common,
                                   "--eval-interval", "1"))
    train_sft.main(tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, last, *common))
    a = [m for m in eval_entries(every) if m["step"] == 2]
    b = [m for m in eval_entries(last) if m["step"] == 2]
    assert len(eval_entries(every)) == 2 and len(eval_entries(last)) == 1
    assert a[0]["valid/gen_tokens"] == b[0]["valid/gen_tokens"] and a[0]["valid/rougeL"] == b[0]["valid/rougeL"]
    assert max_abs_diff(weights(every / "2"), weights(last / "2")) == 0.0


def test_a_number_reported_on_some_steps_is_averaged_over_those_steps() -> None:
    from distill.trainer import window_means

    # Steps 1-4 of a window: the loss every step, a selection's overlap on the two steps that re-selected.
    sums, counts = {"loss": 0.0, "selection_overlap": 0.0, "tokens": 0.0}, {"loss": 0, "selection_overlap": 0}
    for step in range(4):
        sums["loss"] += 2.0 + step
        counts["loss"] += 1
        sums["tokens"] += 10
        if step % 2 == 0:
            sums["selection_overlap"] += 0.8
            counts["selection_overlap"] += 1
    means = window_means(sums, counts)
    assert means["loss"] == 3.5
    assert means["selection_overlap"] == pytest.approx(0.8)  # not 0.4: the steps without a selection do not count
    assert means["tokens"] == 40  # a total, passed as is
