#!/usr/bin/env bash
# MiniLLM as released for LLaMA (minillm/scripts/llama/minillm/train_7B_13B.sh of LMOps, LLaMA-7B from the SFT'd
# LLaMA-13B; this toolkit's LLaMA pair is OpenLLaMA-2 3B from the LoRA-tuned OpenLLaMA-2 7B, as scripts/llama/kd/
# kd_3B.sh): OpenLLaMA-2 3B, fully trained, initialised by SFT selected by validation loss (minillm/init_3B.sh), from
# checkpoints/openllama2-7B + its SFT adapter (merged, in the resolved precision); lr 5e-6 with the release's LLaMA
# schedule (--scheduler-name cosine_trm: cosine to 0 over --total-iters after the 100 warm-up steps), batch 8,
# gradient accumulation 2, 8 prompts per generation chunk, gradient checkpointing, ZeRO-2 (the release: ZeRO-1 with
# --model-parallel-size 4, not supported here, or ZeRO-2 in its train_7B_13B_zero2.sh), the pretraining term on
# OpenWebText (processed_data/openwebtext/full/llama; the release's is its RoBERTa corpus, LM_DATA_DIR=... to use
# one; LM_DATA_DIR=none is its train_7B_13B_no_pt.sh). Every value is overridable: scripts/common/minillm.sh.
FAMILY=llama; STUDENT=${STUDENT:-openllama2-3B}; STUDENT_HF=openlm-research/open_llama_3b_v2; TEACHER=${TEACHER:-openllama2-7B}; TEACHER_SCRIPT=sft/sft_7B_lora.sh; INIT_SCRIPT=minillm/init_3B.sh
BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-2}; CHUNK_SIZE=${CHUNK_SIZE:-8}; LR_SCHEDULE=${LR_SCHEDULE:-cosine}
ZERO_STAGE=${ZERO_STAGE:-2}
TEACHER_HF=openlm-research/open_llama_7b_v2
TEACHER_CKPT=${TEACHER_CKPT:-checkpoints/openllama2-7B}; TEACHER_PEFT=${TEACHER_PEFT:-results/llama/train/sft/openllama2-7B/best}
EXTRA=(--gradient-checkpointing)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/minillm.sh" "$@"
