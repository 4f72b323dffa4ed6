#!/usr/bin/env bash
# GPU check (a manual check, not CI): tokens/s, peak memory and model FLOPs utilisation of SFT, KD and evaluation
# generation through the real entry points, on the tiny models and random GPT-2-shaped 124M / 774M models, in bf16
# (fp16 where bf16 is not native) under ZeRO-2 and ZeRO-3. Writes results/gpu_check/gpu_check.{json,md}.
#   bash scripts/gpu_check.sh                                  # every case (CUDA)
#   bash scripts/gpu_check.sh --zero 2 --sizes 124M 774M       # a subset; all flags: --help
#   bash scripts/gpu_check.sh --smoke                          # CPU: tiny models, fp32, a few steps, MFU n/a
# What it measures and the FLOPs formula: docs/gpu_check.md (and tools/gpu_check.py's docstring).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

run_python tools/gpu_check.py ${PASS_ARGS[@]+"${PASS_ARGS[@]}"}
