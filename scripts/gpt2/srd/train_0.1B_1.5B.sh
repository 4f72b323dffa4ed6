#!/usr/bin/env bash
# SRD: GPT-2 base (0.1B) from the SFT'd GPT-2 XL (1.5B), curriculum of 3 of 4 easy->hard parts, temperature 1.0 -> 2.0
# (--type tfkl|trkl|tjsd|ttvd|tsfkl|tsrkl, default tfkl). EPOCHS is per stage: half the plain KD script's 20, so the
# three stages (25%, 50%, 75% of the data) make 0.75x the plain run's example passes.
FAMILY=gpt2; STUDENT=${STUDENT:-gpt2-base}; STUDENT_HF=openai-community/gpt2; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/srd.sh" "$@"
