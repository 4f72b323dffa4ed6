#!/usr/bin/env bash
# KD of Qwen2-0.5B from the SFT'd Qwen2-1.5B (--type fkl|rkl|jsd|tvd|sfkl|srkl|tfkl|..., default fkl).
FAMILY=qwen2; STUDENT=${STUDENT:-qwen2-0.5B}; STUDENT_HF=Qwen/Qwen2-0.5B; TEACHER=${TEACHER:-qwen2-1.5B}; TEACHER_SCRIPT=sft/sft_1.5B.sh
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/kd.sh" "$@"
