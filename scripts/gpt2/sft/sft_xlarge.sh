#!/usr/bin/env bash
# SFT of GPT-2 XL (1.5B), the teacher.
FAMILY=gpt2; MODEL_NAME=${MODEL_NAME:-gpt2-xlarge}; HF_ID=openai-community/gpt2-xl
LR=${LR:-5e-5}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
