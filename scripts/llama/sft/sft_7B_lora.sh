#!/usr/bin/env bash
# SFT of OpenLLaMA-2 7B with LoRA, the teacher.
FAMILY=llama; MODEL_NAME=${MODEL_NAME:-openllama2-7B}; HF_ID=openlm-research/open_llama_7b_v2
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-2}
EXTRA=(--peft lora --peft-lora-r 8 --peft-lora-alpha 32 --peft-lora-dropout 0.1)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
