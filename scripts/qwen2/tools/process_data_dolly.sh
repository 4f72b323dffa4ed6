#!/usr/bin/env bash
# Tokenize instruction data (default data/dolly) for qwen2-family models into processed_data/<data>/full/qwen2/,
# rendering prompts with the tokenizer's chat template.
# Env (DATA_DIR, CKPT, PROCESSED_DIR, WORKERS) and defaults: scripts/common/process_data_dolly.sh; --flags go to
# tools/process_data_dolly.py and win, e.g. --eval-set --dev-num 0 for an evaluation set.
FAMILY=qwen2; MODEL_NAME=qwen2-0.5B; HF_ID=Qwen/Qwen2-0.5B; EXTRA=(--chat-template)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/process_data_dolly.sh" "$@"
