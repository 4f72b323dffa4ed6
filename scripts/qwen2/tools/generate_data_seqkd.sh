#!/usr/bin/env bash
# SeqKD step 1: the SFT'd Qwen2-1.5B answers every training prompt of processed_data/dolly/full/qwen2/
# (sampled, temperature 1) into data/dolly_seqkd/<teacher>/{train,valid}.jsonl. Re-run to resume after a stop.
# Env and defaults: scripts/common/seqkd.sh; --flags go to tools/generate_data.py (e.g. --no-do-sample).
FAMILY=qwen2; TEACHER=${TEACHER:-qwen2-1.5B}; TEACHER_SCRIPT=sft/sft_1.5B.sh
SEQKD_STAGE=generate
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
