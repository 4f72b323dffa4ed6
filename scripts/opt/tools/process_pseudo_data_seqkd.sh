#!/usr/bin/env bash
# SeqKD step 2: tokenize the teacher's answers (data/dolly_seqkd/<teacher>/) for opt-family students into
# processed_data/dolly/pseudo/<teacher>/opt/.
# Env and defaults: scripts/common/seqkd.sh; --flags go to tools/process_data_dolly.py.
FAMILY=opt; TEACHER=${TEACHER:-opt-2.7B}; TOKENIZER_MODEL=opt-125M; TOKENIZER_HF=facebook/opt-125m
SEQKD_STAGE=process
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
