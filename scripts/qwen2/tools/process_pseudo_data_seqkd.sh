#!/usr/bin/env bash
# SeqKD step 2: tokenize the teacher's answers (data/dolly_seqkd/<teacher>/) for qwen2-family students into
# processed_data/dolly/pseudo/<teacher>/qwen2/, prompts rendered with the chat template.
# Env and defaults: scripts/common/seqkd.sh; --flags go to tools/process_data_dolly.py.
FAMILY=qwen2; TEACHER=${TEACHER:-qwen2-1.5B}; TOKENIZER_MODEL=qwen2-0.5B; TOKENIZER_HF=Qwen/Qwen2-0.5B
PROCESS_EXTRA=(--chat-template)  # as the teacher's prompts were rendered
SEQKD_STAGE=process
source "$(dirname "${BASH_SOURCE[0]}")/../../common/seqkd.sh" "$@"
