#!/usr/bin/env bash
# Tokenize instruction data (default data/dolly) for gpt2-family models into processed_data/<data>/full/gpt2/.
# Env (DATA_DIR, CKPT, PROCESSED_DIR, WORKERS) and defaults: scripts/common/process_data_dolly.sh; --flags go to
# tools/process_data_dolly.py and win, e.g. --eval-set --dev-num 0 for an evaluation set.
FAMILY=gpt2; MODEL_NAME=gpt2-base; HF_ID=openai-community/gpt2; EXTRA=()
source "$(dirname "${BASH_SOURCE[0]}")/../../common/process_data_dolly.sh" "$@"
