#!/usr/bin/env bash
# MiniLLM as released (minillm/scripts/gpt2/minillm/train_medium_xl.sh of LMOps): GPT-2 medium (0.3B), initialised
# by SFT selected by validation loss (minillm/init_medium.sh), from the SFT'd GPT-2 XL (1.5B); lr 5e-6, batch 2,
# gradient accumulation 2, 8 prompts per generation chunk, the pretraining term on OpenWebText
# (processed_data/openwebtext/full/gpt2; LM_DATA_DIR=none: without it). Every value is overridable:
# scripts/common/minillm.sh.
FAMILY=gpt2; STUDENT=${STUDENT:-gpt2-medium}; STUDENT_HF=openai-community/gpt2-medium; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh; INIT_SCRIPT=minillm/init_medium.sh
BATCH_SIZE=${BATCH_SIZE:-2}; GRAD_ACC=${GRAD_ACC:-2}; CHUNK_SIZE=${CHUNK_SIZE:-8}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/minillm.sh" "$@"
