#!/usr/bin/env bash
# SFT of OpenLLaMA-2 3B, the student.
FAMILY=llama; MODEL_NAME=${MODEL_NAME:-openllama2-3B}; HF_ID=openlm-research/open_llama_3b_v2
LR=${LR:-2e-5}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-2}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
