#!/usr/bin/env bash
# KD of OPT-350M from the SFT'd OPT-2.7B (--type fkl|rkl|jsd|tvd|sfkl|srkl|tfkl|..., default fkl).
FAMILY=opt; STUDENT=${STUDENT:-opt-350M}; STUDENT_HF=facebook/opt-350m; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/kd.sh" "$@"
