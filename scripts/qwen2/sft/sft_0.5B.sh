#!/usr/bin/env bash
# SFT of Qwen2-0.5B, the student.
FAMILY=qwen2; MODEL_NAME=${MODEL_NAME:-qwen2-0.5B}; HF_ID=Qwen/Qwen2-0.5B
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
