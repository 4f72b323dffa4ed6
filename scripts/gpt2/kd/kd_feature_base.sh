#!/usr/bin/env bash
# KD of GPT-2 base (0.1B) from the SFT'd GPT-2 XL (1.5B) plus the selective feature term (docs/feature_kd.md), with
# the KD-LLMs release's feature flags: --method grad --hidden, layers [-1,-2,-3] of both, the student's widths
# (768 residual / 3072 MLP units kept of the teacher's 1600 / 6400), --alpha-corr 0.05. Any of them, and --type, by
# appending flags (e.g. --method integrated_grads --mlp); FEATURE_METHOD sets --method.
FAMILY=gpt2; STUDENT=${STUDENT:-gpt2-base}; STUDENT_HF=openai-community/gpt2; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}; METHOD=kd_feature
EXTRA=(--method "${FEATURE_METHOD:-grad}" --hidden --student-layer-indices "[-1,-2,-3]" --teacher-layer-indices "[-1,-2,-3]"
       --student-hidd-size 768 --student-mlp-size 3072 --alpha-corr 0.05)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/kd.sh" "$@"
