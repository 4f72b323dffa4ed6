#!/usr/bin/env bash
# SFT of GPT-2 large (0.8B), a student baseline.
FAMILY=gpt2; MODEL_NAME=${MODEL_NAME:-gpt2-large}; HF_ID=openai-community/gpt2-large
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
