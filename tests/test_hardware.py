"""distill/hardware.py: the precision a machine runs natively, and how the launchers and runs use the choice.

The hardware is described by hand (``Hardware``), so every case runs on any machine: an AVX2-only CPU, a CPU with
AVX512-BF16 or AMX, and GPUs of compute capability 7.0 and 8.0.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from distill import hardware
from distill.config import InputError
from distill.hardware import Hardware

AVX2 = Hardware("cpu", "AVX2")
AVX512_BF16 = Hardware("cpu", "AVX512", cpu_avx512_bf16=True)
AMX = Hardware("cpu", "AVX512", cpu_amx=True)
V100 = Hardware("cuda", "Tesla V100-SXM2-32GB", 8, (7, 0))
A100 = Hardware("cuda", "NVIDIA A100-SXM4-80GB", 8, (8, 0))
OLD_GPU = Hardware("cuda", "Tesla P100", 1, (6, 0))


@pytest.mark.parametrize("hw, expected", [(AVX2, "fp32"), (AVX512_BF16, "bf16"), (AMX, "bf16"), (V100, "fp16"),
                                          (A100, "bf16"), (OLD_GPU, "fp32")])
def test_auto_picks_the_fastest_native_precision(hw: Hardware, expected: str) -> None:
    choice = hardware.resolve("auto", hw)
    assert choice.precision == expected and choice.warning is None


def test_forcing_an_emulated_precision_warns_in_one_line_and_is_honoured() -> None:
    choice = hardware.resolve("bf16", AVX2)
    assert choice.precision == "bf16"
    assert choice.warning is not None and "\n" not in choice.warning
    assert "emulated" in choice.warning and "AVX2" in choice.warning and "fp32" in choice.warning
    assert hardware.resolve("bf16", AVX512_BF16).warning is None  # native: nothing to say
    assert hardware.resolve("fp16", V100).warning is None
    assert hardware.resolve("bf16", V100).warning is not None  # Volta has no bf16 arithmetic
    assert hardware.resolve("fp32", AVX2).warning is None


def test_unknown_precision_is_an_input_error() -> None:
    with pytest.raises(InputError, match="PRECISION='fp8'"):
        hardware.resolve("fp8", AVX2)


def test_run_precisions_and_warnings_name_what_is_emulated() -> None:
    from distill.config import DistillConfig

    kd = DistillConfig(teacher_model_path="t", teacher_model_bf16=True)
    precisions = hardware.run_precisions({"bf16": {"enabled": True}}, [kd])
    assert precisions == {"student": "bf16", "teacher": "bf16"}
    warnings = hardware.run_warnings(precisions, AVX2)
    assert len(warnings) == 2 and "DeepSpeed config" in warnings[0] and "teacher" in warnings[1]
    assert hardware.run_warnings(precisions, AVX512_BF16) == []
    assert hardware.run_precisions({}, []) == {"student": "fp32"}
    line = hardware.run_line(precisions, AVX2)
    assert line.startswith("precision: student bf16, teacher bf16; CPU AVX2") and "native: fp32" in line


def test_probe_reads_this_machine() -> None:
    import torch

    hw = hardware.probe()
    assert hw.device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert "fp32" in hw.native
    if hw.device == "cpu":
        assert hw.name == torch.backends.cpu.get_cpu_capability()


def test_shell_form_is_what_lib_sh_evaluates() -> None:
    script = f'eval "$({sys.executable} -m distill.hardware --shell)"; echo "$NUM_GPUS|$PRECISION_RESOLVED|$PRECISION_INFO"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    choice = hardware.resolve("auto")
    assert out == f"{choice.hardware.num_gpus}|{choice.precision}|{choice.line()}"
    bad = subprocess.run([sys.executable, "-m", "distill.hardware", "--precision", "fp8", "--shell"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: PRECISION='fp8'") and bad.stdout == ""
