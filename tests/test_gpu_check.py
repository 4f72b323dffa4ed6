"""tools/gpu_check.py: the FLOPs / MFU formulas against hand computations, the peak table, and the CPU smoke mode
end to end (tiny models, fp32, ZeRO-2 and ZeRO-3, SFT + KD + generation through the real entry points)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tools import gpu_check as gc


# ------------------------------------------------------------------------------------------------------ formulas ---
def test_train_and_teacher_flops_per_token_by_hand():
    # tiny gpt2 student: N = 198,400 params - 32,768 position table = 165,632; L = 2, d = 64; T = 127
    assert gc.train_flops_per_token(165_632, 2, 64, 127) == 6 * 165_632 + 12 * 2 * 64 * 127 == 1_188_864
    # tiny gpt2 teacher, forward only: 2 * 1,976,448 + 4 * 4 * 192 * 127
    assert gc.teacher_flops_per_token(1_976_448, 4, 192, 127) == 3_952_896 + 390_144 == 4_343_040
    # GPT-2 124M at T = 511: 6 * 123,653,376 + 12 * 12 * 768 * 511
    assert gc.train_flops_per_token(123_653_376, 12, 768, 511) == 741_920_256 + 56_512_512 == 798_432_768


def test_generation_flops_by_hand():
    # N = 1000, L = 2, d = 10; a 3-token prompt then 2 new tokens:
    # prompt 3 * (2000 + 80 * 3) = 6720; new token 1 attends 4 keys: 2000 + 80 * 4 = 2320; token 2: 2000 + 80 * 5
    assert gc.generation_flops(1000, 2, 10, [3], [2]) == 6720 + 2320 + 2400 == 11_440
    assert gc.generation_flops(1000, 2, 10, [3, 3], [2, 2]) == 2 * 11_440
    assert gc.generation_flops(1000, 2, 10, [], []) == 0


def test_effective_seq_len_is_token_weighted():
    assert gc.effective_seq_len([127] * 5) == 127
    assert gc.effective_seq_len([1, 3]) == pytest.approx((1 + 9) / 4)


def test_mfu_by_hand():
    # 798,432,768 FLOPs/token at 100,000 tokens/s = 79.84 TFLOP/s; on one 989 TFLOP/s GPU: 8.07 %
    assert gc.mfu(798_432_768 * 100_000, 989.0) == pytest.approx(79.8432768 / 989)
    assert gc.mfu(798_432_768 * 100_000, 989.0, n_gpus=2) == pytest.approx(79.8432768 / 989 / 2)
    assert gc.mfu(1e12, None) is None


def test_flop_params_of_the_gpt2_shapes():
    """GPT-2's published parameter counts; the FLOP count drops only the position table (the token embedding is
    also the tied LM head, so it multiplies activations)."""
    import torch
    from transformers import GPT2LMHeadModel

    tok = SimpleNamespace(eos_token_id=0)
    for size, total, wpe in (("124M", 124_439_808, 1024 * 768), ("774M", 774_030_080, 1024 * 1280)):
        with torch.device("meta"):
            model = GPT2LMHeadModel(gc.gpt2_config(size, tok))
        assert model.num_parameters() == total
        assert gc.flop_params(model) == total - wpe


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100-PCIE-40GB", 312.0),
    ("NVIDIA L40S", 362.0), ("NVIDIA L40", 181.0), ("NVIDIA L4", 121.0), ("NVIDIA A10G", 125.0),
    ("NVIDIA GeForce RTX 4090", 165.0), ("Tesla T4", 65.0), ("Some Future GPU", None),
])
def test_peak_table(name, peak):
    assert gc.lookup_peak_tflops(name)[0] == peak


def test_train_metrics_skip_warmup_and_combine_harmonically():
    lines = [{"step": 1, "train/tokens_per_s": 10.0, "train/peak_mem_mb": 5.0},
             {"step": 2, "train/tokens_per_s": 100.0, "train/peak_mem_mb": 7.0},
             {"step": 3, "train/tokens_per_s": 300.0, "train/peak_mem_mb": 6.0},
             {"step": 3, "valid/loss": 1.0}]
    out = gc.summarise_train_metrics(lines, warmup_steps=1)
    # equal tokens per step: total tokens / total time = 2 / (1/100 + 1/300)
    assert out["tokens_per_s"] == pytest.approx(150.0)
    assert out["steps_measured"] == 2 and out["peak_mem_mb"] == 7.0


def test_plan_cases():
    names = [c.name for c in gc.plan_cases(list(gc.SIZES), list(gc.KINDS), [2, 3], ["bf16"])]
    assert "kd/gpt2-774M->gpt2-124M/zero3/bf16" in names and "sft/gpt2-774M/zero2/bf16" in names
    assert "gen/gpt2-124M/bf16" in names and "kd/tiny-teacher->tiny-student/zero2/bf16" in names
    assert len(names) == len(set(names)) == 2 * (3 + 2) + 3
    # KD between GPT-2 shapes needs both sizes
    assert not [n for n in (c.name for c in gc.plan_cases(["124M"], ["kd"], [2], ["bf16"]))]


# --------------------------------------------------------------------------------------------------- end to end ---
def test_smoke_mode_writes_every_case(tmp_path: Path, in_process):
    out = tmp_path / "out"
    rc = gc.main(["--smoke", "--zero", "2", "3", "--out", str(out), "--tiny-models", str(tmp_path / "none")])
    assert rc == 0
    report = json.loads((out / "gpu_check.json").read_text())
    md = (out / "gpu_check.md").read_text()
    cases = {c["name"]: c for c in report["cases"]}
    assert set(cases) == {"sft/tiny-student/zero2/fp32", "kd/tiny-teacher->tiny-student/zero2/fp32",
                          "sft/tiny-student/zero3/fp32", "kd/tiny-teacher->tiny-student/zero3/fp32",
                          "gen/tiny-student/fp32"}
    models = report["models"]
    t = report["settings"]["seq_len_eff"]
    assert t == report["settings"]["seq_len"] - 1  # every example is truncated to the same length
    s, te = models["tiny-student"], models["tiny-teacher"]
    for name, c in cases.items():
        assert c["status"] == "ok", c
        assert c["tokens_per_s"] > 0 and c["peak_mem_mb"] > 0 and c["achieved_tflops"] > 0
        assert c["mfu"] is None and "CPU" in c["mfu_note"]  # no peak for a CPU
        assert f"| {name} |" in md
    want = gc.train_flops_per_token(s["flop_params"], s["n_layer"], s["d_model"], t)
    assert cases["sft/tiny-student/zero3/fp32"]["flops_per_token"] == pytest.approx(want)
    want += gc.teacher_flops_per_token(te["flop_params"], te["n_layer"], te["d_model"], t)
    assert cases["kd/tiny-teacher->tiny-student/zero2/fp32"]["flops_per_token"] == pytest.approx(want)
    assert cases["sft/tiny-student/zero2/fp32"]["steps_measured"] == report["settings"]["steps"]
    gen = cases["gen/tiny-student/fp32"]
    assert gen["generated_tokens"] == report["settings"]["gen_batch_size"] * report["settings"]["max_new_tokens"]


def test_a_failing_case_is_recorded_from_its_own_process(tmp_path: Path, subprocess_env, monkeypatch):
    """The default (GPU) path: a fresh worker process per case; its exit status and log tail come back."""
    for k, v in subprocess_env.items():
        monkeypatch.setenv(k, v)
    # --save-checkpoints: the worker then imports only the entry point, which rejects the input before torch loads
    args = gc.parse_args(["--smoke", "--no-in-process", "--save-checkpoints", "--out", str(tmp_path)])
    spec = gc.ModelSpec("tiny-student", str(tmp_path / "no-model"), 1, 1, 1, 1, 1, 1)
    case = gc.Case("sft", "tiny-student", "fp32", zero=2)
    with pytest.raises(gc.CaseError) as e:
        gc.run_train_case(case, {"tiny-student": spec}, tmp_path / "no-data", tmp_path, args, cpu=True)
    assert "exit status 2" in str(e.value)
    assert "error: --model-path" in e.value.tail
