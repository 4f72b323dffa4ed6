#!/usr/bin/env bash
# SeqKD step 3: SFT of Qwen2-0.5B on the SFT'd Qwen2-1.5B's answers (processed_data/dolly/pseudo/<teacher>/qwen2/).
FAMILY=qwen2; STUDENT=${STUDENT:-qwen2-0.5B}; STUDENT_HF=Qwen/Qwen2-0.5B; TEACHER=${TEACHER:-qwen2-1.5B}
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
SEQKD_STAGE=train
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
