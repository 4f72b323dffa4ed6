#!/usr/bin/env bash
# SRD as released (scripts/gpt2/srd/train_0.1B_1.5B/t0.sh, t1.sh, t2.sh of the SRD code): GPT-2 base (0.1B) from the
# SFT'd GPT-2 XL (1.5B); the pretrained student reflects; 3 of 4 easy->hard parts, each stage from the previous
# stage's last checkpoint, 8 epochs per stage, lr 1e-4 cosine to 1e-7 without warm-up, batch 16, kd-ratio
# 0.8/0.9/1.0, temperature 1/1.5/2, validation Rouge-L every epoch, best checkpoint over all stages
# (--type tfkl|trkl|tjsd|ttvd|tsfkl|tsrkl, default tfkl). Every value is overridable: scripts/common/srd.sh.
FAMILY=gpt2; STUDENT=${STUDENT:-gpt2-base}; STUDENT_HF=openai-community/gpt2; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh
LR=${LR:-1e-4}; LR_MIN=${LR_MIN:-1e-7}; BATCH_SIZE=${BATCH_SIZE:-16}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-8}
EVAL_INTERVAL=${EVAL_INTERVAL:--1}; SAVE_INTERVAL=${SAVE_INTERVAL:--1}
KD_RATIOS=${KD_RATIOS:-0.8 0.9 1.0}; TEMPERATURES=${TEMPERATURES:-1 1.5 2}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/srd.sh" "$@"
