#!/usr/bin/env bash
# The on-policy students' initialisation as released (scripts/opt/init/init_0.3B.sh of the DistiLLM code): SFT of
# OPT-350M for 3 epochs, lr 5e-5, batch 8, validation Rouge-L every epoch sampled at temperature 1 ->
# results/opt/train/init/opt-350M/, whose best checkpoint the gkd/, imitkd/ and distillm/ launchers start from.
FAMILY=opt; MODEL_NAME=${MODEL_NAME:-opt-350M}; HF_ID=facebook/opt-350m; METHOD=init
LR=${LR:-5e-5}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-3}
EXTRA=(--do-sample --top-k 0 --top-p 1.0 --temperature 1.0)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
