#!/usr/bin/env bash
# MiniLLM's initialisation as released (LMOps minillm/README.md, "Initial Checkpoints": minillm/scripts/gpt2/sft/
# sft_large.sh, its checkpoint selected by validation loss): SFT of GPT-2 large (0.8B) for 10 epochs, lr 1e-4,
# batch 2, validation loss every epoch (no generation: --no-eval-gen, so the best checkpoint is the lowest validation
# loss) -> results/gpt2/train/minillm_init/gpt2-large/, whose best checkpoint minillm/train_large_xl.sh starts from.
FAMILY=gpt2; MODEL_NAME=${MODEL_NAME:-gpt2-large}; HF_ID=openai-community/gpt2-large; METHOD=minillm_init
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-2}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
EXTRA=(--no-eval-gen)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
