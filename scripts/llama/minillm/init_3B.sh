#!/usr/bin/env bash
# MiniLLM's initialisation for LLaMA as released (LMOps minillm/README.md, "Initial Checkpoints", for LLaMA
# minillm/scripts/llama/sft/sft_7B.sh, its checkpoint selected by validation loss): full SFT of OpenLLaMA-2 3B for
# 10 epochs, lr 1e-5, batch 1, gradient accumulation 2, gradient checkpointing, ZeRO-2, validation loss every epoch
# (no generation: --no-eval-gen, so the best checkpoint is the lowest validation loss) ->
# results/llama/train/minillm_init/openllama2-3B/, whose best checkpoint minillm/train_3B_7B.sh starts from.
FAMILY=llama; MODEL_NAME=${MODEL_NAME:-openllama2-3B}; HF_ID=openlm-research/open_llama_3b_v2; METHOD=minillm_init
LR=${LR:-1e-5}; BATCH_SIZE=${BATCH_SIZE:-1}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-2}
EXTRA=(--gradient-checkpointing --no-eval-gen)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
