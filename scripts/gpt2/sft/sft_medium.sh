#!/usr/bin/env bash
# SFT of GPT-2 medium (0.3B), a student baseline.
FAMILY=gpt2; MODEL_NAME=${MODEL_NAME:-gpt2-medium}; HF_ID=openai-community/gpt2-medium
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
