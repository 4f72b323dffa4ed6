#!/usr/bin/env bash
# SeqKD step 1: the SFT'd OPT-2.7B answers every training prompt of processed_data/dolly/full/opt/
# (sampled, temperature 1) into data/dolly_seqkd/<teacher>/{train,valid}.jsonl. Re-run to resume after a stop.
# Env and defaults: scripts/common/seqkd.sh; --flags go to tools/generate_data.py (e.g. --no-do-sample).
FAMILY=opt; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh
SEQKD_STAGE=generate
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
