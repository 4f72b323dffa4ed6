#!/usr/bin/env bash
# SRD: OPT-125M from the SFT'd OPT-2.7B with the GPT-2 recipe of the SRD release (it has no OPT recipe of its own):
# 3 of 4 easy->hard parts, 8 epochs per stage, lr 1e-4 cosine to 1e-7 without warm-up, batch 16, kd-ratio
# 0.8/0.9/1.0, temperature 1/1.5/2, validation Rouge-L every epoch (--type tfkl|trkl|tjsd|ttvd|tsfkl|tsrkl, default
# tfkl). Every value is overridable: scripts/common/srd.sh.
FAMILY=opt; STUDENT=${STUDENT:-opt-125M}; STUDENT_HF=facebook/opt-125m; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh
LR=${LR:-1e-4}; LR_MIN=${LR_MIN:-1e-7}; BATCH_SIZE=${BATCH_SIZE:-16}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-8}
EVAL_INTERVAL=${EVAL_INTERVAL:--1}; SAVE_INTERVAL=${SAVE_INTERVAL:--1}
KD_RATIOS=${KD_RATIOS:-0.8 0.9 1.0}; TEMPERATURES=${TEMPERATURES:-1 1.5 2}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/srd.sh" "$@"
