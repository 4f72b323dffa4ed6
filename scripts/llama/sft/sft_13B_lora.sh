#!/usr/bin/env bash
# SFT of LLaMA-2 13B with LoRA, a teacher.
FAMILY=llama; MODEL_NAME=${MODEL_NAME:-llama2-13B}; HF_ID=meta-llama/Llama-2-13b-hf
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-2}; GRAD_ACC=${GRAD_ACC:-4}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-2}
EXTRA=(--peft lora --peft-lora-r 8 --peft-lora-alpha 32 --peft-lora-dropout 0.1)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
