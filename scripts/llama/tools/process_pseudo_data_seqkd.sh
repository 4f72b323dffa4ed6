#!/usr/bin/env bash
# SeqKD step 2: tokenize the teacher's answers (data/dolly_seqkd/<teacher>/) for llama-family students into
# processed_data/dolly/pseudo/<teacher>/llama/.
# Env and defaults: scripts/common/seqkd.sh; --flags go to tools/process_data_dolly.py.
FAMILY=llama; TEACHER=${TEACHER:-openllama2-7B}
TOKENIZER_MODEL=openllama2-7B; TOKENIZER_HF=openlm-research/open_llama_7b_v2
SEQKD_STAGE=process
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
