#!/usr/bin/env bash
# The LoRA MiniLLM student's initialisation as released (the adapter minillm/scripts/llama/minillm/
# train_7B_13B_lora.sh of LMOps continues, made by its minillm/scripts/llama/sft/sft_7B_lora.sh and selected by
# validation loss): SFT of OpenLLaMA-2 3B with LoRA (r 8, alpha 32, dropout 0.1, the release's defaults) for 20
# epochs, lr 5e-4, batch 4, seed 20, gradient checkpointing, ZeRO-2, validation loss every epoch (no generation:
# --no-eval-gen, so the best adapter is the lowest validation loss) -> results/llama/train/minillm_init_lora/
# openllama2-3B/, whose best adapter minillm/train_3B_7B_lora.sh continues.
FAMILY=llama; MODEL_NAME=${MODEL_NAME:-openllama2-3B}; HF_ID=openlm-research/open_llama_3b_v2; METHOD=minillm_init_lora
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-20}
SEED=${SEED:-20}; ZERO_STAGE=${ZERO_STAGE:-2}
EXTRA=(--peft lora --peft-lora-r 8 --peft-lora-alpha 32 --peft-lora-dropout 0.1 --gradient-checkpointing --no-eval-gen)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
