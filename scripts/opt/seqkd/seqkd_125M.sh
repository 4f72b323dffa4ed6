#!/usr/bin/env bash
# SeqKD step 3: SFT of OPT-125M on the SFT'd OPT-2.7B's answers (processed_data/dolly/pseudo/<teacher>/opt/).
FAMILY=opt; STUDENT=${STUDENT:-opt-125M}; STUDENT_HF=facebook/opt-125m; TEACHER=${TEACHER:-opt-2.7B}
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
SEQKD_STAGE=train
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
