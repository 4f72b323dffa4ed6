#!/usr/bin/env bash
# Tokenize a one-document-per-line text corpus (default data/openwebtext/data.txt) for llama-family models and pack it
# into 512-token chunks in processed_data/<corpus>/full/llama/.
# Env (DATA_PATH, CKPT, PROCESSED_DIR, WORKERS) and defaults: scripts/common/process_data_pretrain.sh; --flags go to
# tools/process_data_pretrain.py and win (e.g. --max-length 1024 --dev-num 100).
FAMILY=llama; MODEL_NAME=openllama2-7B; HF_ID=openlm-research/open_llama_7b_v2; EXTRA=()
source "$(dirname "${BASH_SOURCE[0]}")/../../common/process_data_pretrain.sh" "$@"
