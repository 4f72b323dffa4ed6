#!/usr/bin/env bash
# The on-policy students' initialisation as released (scripts/openllama2/init/sft_3B_lora.sh of the DistiLLM code):
# SFT of OpenLLaMA-2 3B with LoRA (r 16, alpha 64, dropout 0.1, the release's defaults) for 3 epochs, lr 5e-4, batch
# 8, seed 20, gradient checkpointing, ZeRO-2, validation Rouge-L every epoch sampled at temperature 1 ->
# results/llama/train/init/openllama2-3B/, whose best adapter the gkd/, imitkd/ and distillm/ launchers continue.
FAMILY=llama; MODEL_NAME=${MODEL_NAME:-openllama2-3B}; HF_ID=openlm-research/open_llama_3b_v2; METHOD=init
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-3}
SEED=${SEED:-20}; ZERO_STAGE=${ZERO_STAGE:-2}
EXTRA=(--peft lora --peft-lora-r 16 --peft-lora-alpha 64 --peft-lora-dropout 0.1 --gradient-checkpointing
       --do-sample --top-k 0 --top-p 1.0 --temperature 1.0)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/sft.sh" "$@"
