#!/usr/bin/env bash
# KD of GPT-2 base (0.1B) from the SFT'd GPT-2 XL (1.5B) (--type fkl|rkl|jsd|tvd|sfkl|srkl|tfkl|..., default fkl).
FAMILY=gpt2; STUDENT=${STUDENT:-gpt2-base}; STUDENT_HF=openai-community/gpt2; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/kd.sh" "$@"
