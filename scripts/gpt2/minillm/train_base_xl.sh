#!/usr/bin/env bash
# MiniLLM as released (minillm/scripts/gpt2/minillm/train_base_xl.sh of LMOps): GPT-2 base (0.1B), initialised by
# SFT selected by validation loss (minillm/init_base.sh), from the SFT'd GPT-2 XL (1.5B); lr 5e-6, batch 16,
# gradient accumulation 1, 16 prompts per generation chunk, the pretraining term on OpenWebText
# (processed_data/openwebtext/full/gpt2). LM_DATA_DIR=none is the release's train_base_xl_no_pt.sh (no pretraining
# term). Every value is overridable: scripts/common/minillm.sh.
FAMILY=gpt2; STUDENT=${STUDENT:-gpt2-base}; STUDENT_HF=openai-community/gpt2; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh; INIT_SCRIPT=minillm/init_base.sh
BATCH_SIZE=${BATCH_SIZE:-16}; GRAD_ACC=${GRAD_ACC:-1}; CHUNK_SIZE=${CHUNK_SIZE:-16}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/minillm.sh" "$@"
