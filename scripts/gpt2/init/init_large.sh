#!/usr/bin/env bash
# The on-policy students' initialisation as released (scripts/gpt2/init/init_large.sh of the DistiLLM code): SFT of
# GPT-2 large (0.8B) for 3 epochs, lr 5e-4, batch 8, validation Rouge-L every epoch sampled at temperature 1 ->
# results/gpt2/train/init/gpt2-large/, whose best checkpoint the gkd/, imitkd/ and distillm/ launchers start from.
FAMILY=gpt2; MODEL_NAME=${MODEL_NAME:-gpt2-large}; HF_ID=openai-community/gpt2-large; METHOD=init
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-3}
EXTRA=(--do-sample --top-k 0 --top-p 1.0 --temperature 1.0)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
