#!/usr/bin/env bash
# SFT of OPT-6.7B, a teacher.
FAMILY=opt; MODEL_NAME=${MODEL_NAME:-opt-6.7B}; HF_ID=facebook/opt-6.7b
LR=${LR:-1e-5}; BATCH_SIZE=${BATCH_SIZE:-2}; GRAD_ACC=${GRAD_ACC:-4}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-3}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
