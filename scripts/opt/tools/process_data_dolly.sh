#!/usr/bin/env bash
# Tokenize instruction data (default data/dolly) for opt-family models into processed_data/<data>/full/opt/.
# Env (DATA_DIR, CKPT, PROCESSED_DIR, WORKERS) and defaults: scripts/common/process_data_dolly.sh; --flags go to
# tools/process_data_dolly.py and win, e.g. --eval-set --dev-num 0 for an evaluation set.
FAMILY=opt; MODEL_NAME=opt-125M; HF_ID=facebook/opt-125m; EXTRA=()
source "$(dirname "${BASH_SOURCE[0]}")/../../common/process_data_dolly.sh" "$@"
