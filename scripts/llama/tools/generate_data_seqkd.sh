#!/usr/bin/env bash
# SeqKD step 1: the LoRA-tuned OpenLLaMA-2 7B (base + adapter, in the resolved precision: bf16 on an Ampere+ GPU;
# DTYPE=fp32|bf16|fp16 overrides) answers every training prompt of
# processed_data/dolly/full/llama/ (sampled, temperature 1) into data/dolly_seqkd/<teacher>/{train,valid}.jsonl.
# Re-run to resume after a stop.
# Env and defaults: scripts/common/seqkd.sh; --flags go to tools/generate_data.py (e.g. --no-do-sample).
FAMILY=llama; TEACHER=${TEACHER:-openllama2-7B}; TEACHER_SCRIPT=sft/sft_7B_lora.sh
# The teacher is base + LoRA adapter; set TEACHER_PEFT= (empty) and TEACHER_CKPT for a fully tuned one.
TEACHER_CKPT=${TEACHER_CKPT:-checkpoints/${TEACHER}}
TEACHER_PEFT=${TEACHER_PEFT-results/llama/train/sft/${TEACHER}/best}
SEQKD_STAGE=generate
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
