#!/usr/bin/env bash
# KD of GPT-2 large (0.8B) from the SFT'd GPT-2 XL (--type fkl|rkl|jsd|tvd|sfkl|srkl|tfkl|..., default fkl).
FAMILY=gpt2; STUDENT=${STUDENT:-gpt2-large}; STUDENT_HF=openai-community/gpt2-large; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/kd.sh" "$@"
