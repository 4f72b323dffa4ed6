#!/usr/bin/env bash
# SRD: Qwen2-0.5B from the SFT'd Qwen2-1.5B, curriculum of 3 of 4 easy->hard parts, temperature 1.0 -> 2.0
# (--type tfkl|trkl|tjsd|ttvd|tsfkl|tsrkl, default tfkl). EPOCHS is per stage: half the plain KD script's 10.
FAMILY=qwen2; STUDENT=${STUDENT:-qwen2-0.5B}; STUDENT_HF=Qwen/Qwen2-0.5B; TEACHER=${TEACHER:-qwen2-1.5B}; TEACHER_SCRIPT=sft/sft_1.5B.sh
LR=${LR:-1e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-5}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/srd.sh" "$@"
