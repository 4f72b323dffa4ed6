#!/usr/bin/env bash
# SFT of OPT-2.7B, the teacher of the small students.
FAMILY=opt; MODEL_NAME=${MODEL_NAME:-opt-2.7B}; HF_ID=facebook/opt-2.7b
LR=${LR:-5e-5}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-2}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
