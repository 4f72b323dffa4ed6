#!/usr/bin/env bash
# DistiLLM as released (scripts/gpt2/distillm/train_0.3B_1.5B.sh of the DistiLLM code): GPT-2 medium (0.3B),
# SFT-initialised (init/init_medium.sh), from the SFT'd GPT-2 XL (1.5B); --type adaptive-srkl, the adaptive off-policy
# schedule (--init-threshold 0.0 --loss-eps 0.1, replay buffer of 1000); lr 5e-4, batch 8, 20 epochs, kd-ratio 1.0,
# the pretraining term on OpenWebText (processed_data/openwebtext/full/gpt2). Every value is overridable:
# scripts/common/onpolicy.sh.
FAMILY=gpt2; METHOD=distillm; STUDENT=${STUDENT:-gpt2-medium}; STUDENT_HF=openai-community/gpt2-medium; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh; INIT_SCRIPT=init/init_medium.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/onpolicy.sh" "$@"
