#!/usr/bin/env bash
# SeqKD step 2: tokenize the teacher's answers (data/dolly_seqkd/<teacher>/) for gpt2-family students into
# processed_data/dolly/pseudo/<teacher>/gpt2/.
# Env and defaults: scripts/common/seqkd.sh; --flags go to tools/process_data_dolly.py.
FAMILY=gpt2; TEACHER=${TEACHER:-gpt2-xlarge}; TOKENIZER_MODEL=gpt2-base; TOKENIZER_HF=openai-community/gpt2
SEQKD_STAGE=process
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
