#!/usr/bin/env bash
# MiniLLM's initialisation for OPT as released (LMOps minillm/README.md, "Initial Checkpoints", for OPT
# minillm/scripts/opt/sft/sft_1.3B.sh, the release's smallest OPT, its checkpoint selected by validation loss): SFT
# of OPT-350M for 10 epochs, lr 5e-5, batch 2, validation loss every epoch (no generation: --no-eval-gen, so the best
# checkpoint is the lowest validation loss) -> results/opt/train/minillm_init/opt-350M/, whose best checkpoint
# minillm/train_350M_2.7B.sh starts from.
FAMILY=opt; MODEL_NAME=${MODEL_NAME:-opt-350M}; HF_ID=facebook/opt-350m; METHOD=minillm_init
LR=${LR:-5e-5}; BATCH_SIZE=${BATCH_SIZE:-2}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
EXTRA=(--no-eval-gen)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
