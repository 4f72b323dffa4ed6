#!/usr/bin/env bash
# SeqKD step 3: SFT of OpenLLaMA-2 3B on the LoRA-tuned OpenLLaMA-2 7B's answers
# (processed_data/dolly/pseudo/<teacher>/llama/).
FAMILY=llama; STUDENT=${STUDENT:-openllama2-3B}; STUDENT_HF=openlm-research/open_llama_3b_v2
TEACHER=${TEACHER:-openllama2-7B}
LR=${LR:-2e-5}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-2}
SEQKD_STAGE=train
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
