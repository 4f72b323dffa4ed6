#!/usr/bin/env bash
# SRD: OPT-125M from the SFT'd OPT-2.7B, curriculum of 3 of 4 easy->hard parts, temperature 1.0 -> 2.0
# (--type tfkl|trkl|tjsd|ttvd|tsfkl|tsrkl, default tfkl). EPOCHS is per stage: half the plain KD script's 20.
FAMILY=opt; STUDENT=${STUDENT:-opt-125M}; STUDENT_HF=facebook/opt-125m; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/srd.sh" "$@"
