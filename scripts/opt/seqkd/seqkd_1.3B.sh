#!/usr/bin/env bash
# SeqKD step 3: SFT of OPT-1.3B on the SFT'd OPT-2.7B's answers (processed_data/dolly/pseudo/<teacher>/opt/).
FAMILY=opt; STUDENT=${STUDENT:-opt-1.3B}; STUDENT_HF=facebook/opt-1.3b; TEACHER=${TEACHER:-opt-2.7B}
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-20}
SEQKD_STAGE=train
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
