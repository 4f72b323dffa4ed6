#!/usr/bin/env bash
# SeqKD step 1: the SFT'd GPT-2 XL (1.5B) answers every training prompt of processed_data/dolly/full/gpt2/
# (sampled, temperature 1) into data/dolly_seqkd/<teacher>/{train,valid}.jsonl. Re-run to resume after a stop.
# Env and defaults: scripts/common/seqkd.sh; --flags go to tools/generate_data.py (e.g. --no-do-sample).
FAMILY=gpt2; TEACHER=${TEACHER:-gpt2-xlarge}; TEACHER_SCRIPT=sft/sft_xlarge.sh
SEQKD_STAGE=generate
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
