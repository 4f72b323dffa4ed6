#!/usr/bin/env bash
# SFT of OPT-125M, a student baseline.
FAMILY=opt; MODEL_NAME=${MODEL_NAME:-opt-125M}; HF_ID=facebook/opt-125m
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
