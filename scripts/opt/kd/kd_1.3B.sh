#!/usr/bin/env bash
# KD of OPT-1.3B from the SFT'd OPT-2.7B (--type fkl|rkl|jsd|tvd|sfkl|srkl|tfkl|..., default fkl).
FAMILY=opt; STUDENT=${STUDENT:-opt-1.3B}; STUDENT_HF=facebook/opt-1.3b; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/kd.sh" "$@"
