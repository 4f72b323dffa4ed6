#!/usr/bin/env bash
# GKD as released (scripts/gpt2/gkd/gkd_base.sh of the DistiLLM code): GPT-2 base (0.1B), SFT-initialised
# (init/init_base.sh), from the SFT'd GPT-2 XL (1.5B); --type mixed-jsd, the student's own answers in half the
# micro-batches (--mixed-alpha 0.5); lr 5e-4, batch 2, 20 epochs, kd-ratio 1.0, no pretraining term
# (LM_DATA_DIR=none). Every value is overridable: scripts/common/onpolicy.sh.
FAMILY=gpt2; METHOD=gkd; STUDENT=${STUDENT:-gpt2-base}; STUDENT_HF=openai-community/gpt2; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh; INIT_SCRIPT=init/init_base.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-2}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
LM_DATA_DIR=${LM_DATA_DIR:-none}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/onpolicy.sh" "$@"
