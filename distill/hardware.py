"""Which floating-point precision this machine runs natively, and the one a run should use.

A bf16 matrix product is only fast where the hardware has bf16 arithmetic: on a CPU with AVX512-BF16 or AMX it ran
1.3x faster than float32 on the built-in models, on an AVX2-only CPU about 60x slower (torch falls back to emulation).
So ``auto`` picks, per device:

* CUDA: bf16 from compute capability 8.0 (Ampere) on, else fp16 from 7.0 (tensor cores), else fp32;
* CPU: bf16 where torch reports AVX512-BF16 or AMX, else fp32 (fp16 training needs a GPU here).

The launchers ask once per command (``python -m distill.hardware --shell``, see scripts/lib.sh) and take their
DeepSpeed config and teacher dtype from the answer; ``PRECISION=fp32|bf16|fp16`` forces one, with a one-line warning
when it is emulated on this device. Training runs print the choice in their first log line.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Optional

PRECISIONS = ("fp32", "bf16", "fp16")
CHOICES = ("auto",) + PRECISIONS
#: How much slower an emulated half-precision step measured than fp32 (AVX2 CPU, 256x192 @ 192x768, one thread).
EMULATED_COST = "about 60x slower than fp32 for matrix products on an AVX2 CPU"


@dataclass(frozen=True)
class Hardware:
    """What the precision choice depends on; ``probe()`` reads it off this machine, tests build it by hand."""

    device: str                      # "cuda" or "cpu"
    name: str                        # GPU name, or the CPU's vector capability as torch reports it (AVX2, AVX512, ...)
    num_gpus: int = 0
    cuda_capability: Optional[tuple[int, int]] = None
    cpu_avx512_bf16: bool = False
    cpu_amx: bool = False

    @property
    def native(self) -> tuple[str, ...]:
        """The precisions with native arithmetic here, fastest first (fp32 is always native)."""
        if self.device == "cuda":
            major = (self.cuda_capability or (0, 0))[0]
            return (("bf16",) if major >= 8 else ()) + (("fp16",) if major >= 7 else ()) + ("fp32",)
        return (("bf16",) if self.cpu_avx512_bf16 or self.cpu_amx else ()) + ("fp32",)

    def describe(self) -> str:
        if self.device == "cuda":
            cc = ".".join(map(str, self.cuda_capability or (0, 0)))
            return f"{self.num_gpus}x {self.name} (compute capability {cc})"
        extras = [n for n, on in (("AVX512-BF16", self.cpu_avx512_bf16), ("AMX", self.cpu_amx)) if on]
        return f"CPU {self.name}" + (f" with {', '.join(extras)}" if extras else ", no native bf16")


def probe() -> Hardware:
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        dev = torch.cuda.current_device()  # this rank's device once the process group is joined
        return Hardware("cuda", torch.cuda.get_device_name(dev), torch.cuda.device_count(),
                        tuple(torch.cuda.get_device_capability(dev)))  # type: ignore[arg-type]
    cpu = torch.cpu
    return Hardware("cpu", torch.backends.cpu.get_cpu_capability(),
                    cpu_avx512_bf16=bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()),
                    cpu_amx=bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()))


@dataclass(frozen=True)
class Choice:
    precision: str
    requested: str
    hardware: Hardware
    warning: Optional[str] = None

    def line(self) -> str:
        how = "auto" if self.requested == "auto" else "forced"
        return f"precision {self.precision} ({how}; {self.hardware.describe()})"


def emulation_warning(precision: str, hw: Hardware, what: str = "PRECISION") -> Optional[str]:
    """One line when ``precision`` has no native arithmetic on ``hw`` (None when it has)."""
    if precision in hw.native:
        return None
    if precision == "fp16" and hw.device == "cpu":
        return None  # not a slow path but an error; the trainer refuses fp16 on CPU with its own message
    what = f"{what}={precision}" if what == "PRECISION" else f"{what} ({precision})"
    return (f"warning: {what} is emulated on {hw.describe()}: {EMULATED_COST}; "
            f"use fp32 (PRECISION=auto picks it) here")


def resolve(requested: str = "auto", hw: Optional[Hardware] = None) -> Choice:
    """The precision to run in: the fastest native one for ``auto``, else the one asked for (with a warning)."""
    if requested not in CHOICES:
        from distill.config import InputError

        raise InputError(f"PRECISION={requested!r}: choose one of {', '.join(CHOICES)}")
    hw = hw or probe()
    if requested == "auto":
        return Choice(hw.native[0], requested, hw)
    return Choice(requested, requested, hw, emulation_warning(requested, hw))


def ds_config_precision(ds_config: dict[str, Any]) -> str:
    """The training precision a DeepSpeed config asks for: 'bf16', 'fp16' or 'fp32'."""
    for name in ("bf16", "fp16"):
        if (ds_config.get(name) or {}).get("enabled"):
            return name
    return "fp32"


def run_precisions(ds_config: dict[str, Any], extra_configs: Any = ()) -> dict[str, str]:
    """What a training run computes in: the student (its DeepSpeed config) and, for KD, the frozen teacher."""
    out = {"student": ds_config_precision(ds_config)}
    for cfg in extra_configs:
        if hasattr(cfg, "teacher_model_bf16"):
            out["teacher"] = "fp16" if cfg.teacher_model_fp16 else "bf16" if cfg.teacher_model_bf16 else "fp32"
    return out


def run_line(precisions: dict[str, str], hw: Hardware) -> str:
    """The first log line of a training run: what runs in which precision, on what."""
    shown = ", ".join(f"{role} {p}" for role, p in precisions.items())
    return f"precision: {shown}; {hw.describe()} (native: {', '.join(hw.native)})"


def run_warnings(precisions: dict[str, str], hw: Hardware) -> list[str]:
    flags = {"student": "the DeepSpeed config's precision", "teacher": "the teacher's dtype flag"}
    return [w for role, p in precisions.items() if (w := emulation_warning(p, hw, flags[role])) is not None]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Prints the precision this machine runs natively (auto) or checks a "
                                                 "forced one.")
    parser.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16")
    parser.add_argument("--shell", action="store_true",
                        help="print NUM_GPUS=..., PRECISION_RESOLVED=... and PRECISION_INFO=... for `eval`")
    args = parser.parse_args(argv)
    try:
        choice = resolve(args.precision)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if choice.warning:
        print(choice.warning, file=sys.stderr)
    if args.shell:
        import shlex

        print(f"NUM_GPUS={choice.hardware.num_gpus}; PRECISION_RESOLVED={choice.precision}; "
              f"PRECISION_INFO={shlex.quote(choice.line())}")
    else:
        print(choice.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
