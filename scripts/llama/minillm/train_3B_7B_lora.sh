#!/usr/bin/env bash
# MiniLLM with a LoRA student as released (minillm/scripts/llama/minillm/train_7B_13B_lora.sh of LMOps, a LLaMA-7B
# adapter from the SFT'd LLaMA-13B; this toolkit's LLaMA pair is OpenLLaMA-2 3B from the LoRA-tuned OpenLLaMA-2 7B):
# a LoRA adapter on checkpoints/openllama2-3B continuing its SFT adapter, selected by validation loss
# (minillm/init_3B_lora.sh), from checkpoints/openllama2-7B + its SFT adapter (merged, in the resolved precision);
# lr 5e-6 with the release's LLaMA schedule (--scheduler-name cosine_trm: cosine to 0 over --total-iters after the
# 100 warm-up steps), batch 8, gradient accumulation 2, 8 prompts per generation chunk, gradient checkpointing,
# ZeRO-1, the pretraining term on OpenWebText (processed_data/openwebtext/full/llama; the release's is its RoBERTa
# corpus, LM_DATA_DIR=... to use one; LM_DATA_DIR=none: without it). Every value is overridable:
# scripts/common/minillm.sh.
FAMILY=llama; STUDENT=${STUDENT:-openllama2-3B}; STUDENT_HF=openlm-research/open_llama_3b_v2; TEACHER=${TEACHER:-openllama2-7B}; TEACHER_SCRIPT=sft/sft_7B_lora.sh; INIT_SCRIPT=minillm/init_3B_lora.sh
BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-2}; CHUNK_SIZE=${CHUNK_SIZE:-8}; LR_SCHEDULE=${LR_SCHEDULE:-cosine}
TEACHER_HF=openlm-research/open_llama_7b_v2
TEACHER_CKPT=${TEACHER_CKPT:-checkpoints/openllama2-7B}; TEACHER_PEFT=${TEACHER_PEFT:-results/llama/train/sft/openllama2-7B/best}
LORA_STUDENT=1; EXTRA=(--gradient-checkpointing)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/minillm.sh" "$@"
