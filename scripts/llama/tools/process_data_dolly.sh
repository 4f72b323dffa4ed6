#!/usr/bin/env bash
# Tokenize instruction data (default data/dolly) for llama-family models into processed_data/<data>/full/llama/.
# Env (DATA_DIR, CKPT, PROCESSED_DIR, WORKERS) and defaults: scripts/common/process_data_dolly.sh; --flags go to
# tools/process_data_dolly.py and win, e.g. --eval-set --dev-num 0 for an evaluation set.
FAMILY=llama; MODEL_NAME=openllama2-7B; HF_ID=openlm-research/open_llama_7b_v2; EXTRA=()
source "$(dirname "${BASH_SOURCE[0]}")/../../common/process_data_dolly.sh" "$@"
