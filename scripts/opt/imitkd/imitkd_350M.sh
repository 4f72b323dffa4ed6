#!/usr/bin/env bash
# ImitKD as released (scripts/opt/imitkd/imitkd_0.3B_2.7B.sh of the DistiLLM code): OPT-350M (the release's opt-0.3B),
# SFT-initialised (init/init_350M.sh), from the SFT'd OPT-2.7B; --type mixed-fkl, the student's own answers in every
# micro-batch (--mixed-alpha 1.0); lr 5e-5, batch 8, 20 epochs, gradient checkpointing, kd-ratio 1.0, the pretraining
# term on OpenWebText (processed_data/openwebtext/full/opt). Every value is overridable: scripts/common/onpolicy.sh.
FAMILY=opt; METHOD=imitkd; STUDENT=${STUDENT:-opt-350M}; STUDENT_HF=facebook/opt-350m; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh; INIT_SCRIPT=init/init_350M.sh
LR=${LR:-5e-5}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
EXTRA=(--gradient-checkpointing)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/onpolicy.sh" "$@"
