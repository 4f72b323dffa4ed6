#!/usr/bin/env bash
# DistiLLM as released (scripts/opt/distillm/train_0.1B_2.7B.sh of the DistiLLM code): OPT-125M (the release's
# opt-0.1B), SFT-initialised (init/init_125M.sh), from the SFT'd OPT-2.7B; --type adaptive-srkl, the adaptive
# off-policy schedule (--init-threshold 0.0 --loss-eps 0.1, replay buffer of 1000); lr 5e-5, batch 8, 20 epochs,
# gradient checkpointing, kd-ratio 1.0, the pretraining term on OpenWebText (processed_data/openwebtext/full/opt).
# Every value is overridable: scripts/common/onpolicy.sh.
FAMILY=opt; METHOD=distillm; STUDENT=${STUDENT:-opt-125M}; STUDENT_HF=facebook/opt-125m; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh; INIT_SCRIPT=init/init_125M.sh
LR=${LR:-5e-5}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
EXTRA=(--gradient-checkpointing)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/onpolicy.sh" "$@"
