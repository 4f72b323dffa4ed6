#!/usr/bin/env bash
# SFT of OPT-1.3B, a student baseline.
FAMILY=opt; MODEL_NAME=${MODEL_NAME:-opt-1.3B}; HF_ID=facebook/opt-1.3b
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
