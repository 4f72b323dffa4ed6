#!/usr/bin/env bash
# SeqKD step 3: SFT of GPT-2 medium (0.3B) on the SFT'd GPT-2 XL (1.5B)'s answers
# (processed_data/dolly/pseudo/<teacher>/gpt2/).
FAMILY=gpt2; STUDENT=${STUDENT:-gpt2-medium}; STUDENT_HF=openai-community/gpt2-medium; TEACHER=${TEACHER:-gpt2-xlarge}
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
SEQKD_STAGE=train
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
