#!/usr/bin/env bash
# SFT of OpenLLaMA-2 7B, full fine-tuning.
FAMILY=llama; MODEL_NAME=${MODEL_NAME:-openllama2-7B}; HF_ID=openlm-research/open_llama_7b_v2
LR=${LR:-1e-5}; BATCH_SIZE=${BATCH_SIZE:-2}; GRAD_ACC=${GRAD_ACC:-4}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-3}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
