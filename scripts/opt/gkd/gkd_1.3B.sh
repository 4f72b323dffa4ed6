#!/usr/bin/env bash
# GKD as released (scripts/opt/gkd/gkd_1.3B_2.7B.sh of the DistiLLM code): OPT-1.3B, SFT-initialised
# (init/init_1.3B.sh), from the SFT'd OPT-2.7B; --type mixed-jsd, the student's own answers in half the micro-batches
# (--mixed-alpha 0.5); lr 5e-5, batch 8, 10 epochs, gradient checkpointing, kd-ratio 1.0, the pretraining term on
# OpenWebText (processed_data/openwebtext/full/opt). Every value is overridable: scripts/common/onpolicy.sh.
FAMILY=opt; METHOD=gkd; STUDENT=${STUDENT:-opt-1.3B}; STUDENT_HF=facebook/opt-1.3b; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh; INIT_SCRIPT=init/init_1.3B.sh
LR=${LR:-5e-5}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
EXTRA=(--gradient-checkpointing)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/onpolicy.sh" "$@"
