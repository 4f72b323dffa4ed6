#!/usr/bin/env bash
# SRD as released for OpenLLaMA (scripts/openllama2/srd/train_3B_7B/t0.sh, t1.sh, t2.sh of the SRD code):
# OpenLLaMA-2 3B, a LoRA student (r 16, alpha 64, dropout 0.1, gradient checkpointing), from the LoRA-tuned
# OpenLLaMA-2 7B (base + adapter, merged, in the resolved precision); 3 of 4 easy->hard parts, 4 epochs per stage,
# lr 1e-4 cosine to 1e-7 without warm-up, batch 2 x accumulation 4 (per GPU; the release ran 4 GPUs), kd-ratio
# 0.7/0.8/0.9, temperature 1/1.33/1.67, validation Rouge-L every epoch, ZeRO-2 (--type tfkl|trkl|tjsd|ttvd|tsfkl|tsrkl,
# default tfkl). Every value is overridable: scripts/common/srd.sh.
FAMILY=llama; STUDENT=${STUDENT:-openllama2-3B}; STUDENT_HF=openlm-research/open_llama_3b_v2; TEACHER=${TEACHER:-openllama2-7B}; TEACHER_SCRIPT=sft/sft_7B_lora.sh
LR=${LR:-1e-4}; LR_MIN=${LR_MIN:-1e-7}; BATCH_SIZE=${BATCH_SIZE:-2}; GRAD_ACC=${GRAD_ACC:-4}; EPOCHS=${EPOCHS:-4}
EVAL_INTERVAL=${EVAL_INTERVAL:--1}; SAVE_INTERVAL=${SAVE_INTERVAL:--1}
KD_RATIOS=${KD_RATIOS:-0.7 0.8 0.9}; TEMPERATURES=${TEMPERATURES:-1 1.33 1.67}
ZERO_STAGE=${ZERO_STAGE:-2}
TEACHER_CKPT=${TEACHER_CKPT:-checkpoints/openllama2-7B}
TEACHER_PEFT=${TEACHER_PEFT:-results/llama/train/sft/openllama2-7B/best}
EXTRA=(--peft lora --peft-lora-r 16 --peft-lora-alpha 64 --peft-lora-dropout 0.1 --gradient-checkpointing)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/srd.sh" "$@"
