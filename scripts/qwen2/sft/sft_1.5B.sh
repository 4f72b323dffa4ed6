#!/usr/bin/env bash
# SFT of Qwen2-1.5B, the teacher.
FAMILY=qwen2; MODEL_NAME=${MODEL_NAME:-qwen2-1.5B}; HF_ID=Qwen/Qwen2-1.5B
LR=${LR:-5e-5}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-2}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
