#!/usr/bin/env bash
# Tokenize instruction data (default data/dolly) for opt-family models into processed_data/<data>/full/opt/.
# Env: DATA_DIR (raw.jsonl, or train.jsonl + valid.jsonl), CKPT (checkpoint whose tokenizer is used), PROCESSED_DIR,
# WORKERS. Extra --flags go to tools/process_data_dolly.py and win, e.g. --eval-set --dev-num 0 for an evaluation set.
source "$(dirname "${BASH_SOURCE[0]}")/../../lib.sh" "$@"

DATA_DIR=${DATA_DIR:-${BASE_PATH}/data/dolly}
# Any opt-family checkpoint with the same tokenizer works; offline: CKPT=checkpoints/tiny-opt-teacher.
CKPT=${CKPT:-${BASE_PATH}/checkpoints/opt-125M}
WORKERS=${WORKERS:-$(nproc)}
# Without PROCESSED_DIR the tool writes to processed_data/<basename of the data dir>/full.
OUT_ARGS=()
if [[ -n "${PROCESSED_DIR:-}" ]]; then OUT_ARGS=(--processed-data-dir "$PROCESSED_DIR"); fi

has_flag data-dir || require_path "$DATA_DIR" \
    "copy databricks-dolly-15k.jsonl to $DATA_DIR/raw.jsonl"\
"  (offline: python tools/make_synthetic_data.py, then DATA_DIR=data/synth)"
has_flag model-path || require_path "$CKPT" \
    "huggingface-cli download facebook/opt-125m --local-dir $CKPT"\
"  (offline: python tools/make_tiny_models.py, then CKPT=checkpoints/tiny-opt-teacher)"

run_python tools/process_data_dolly.py \
    --data-dir "$DATA_DIR" \
    "${OUT_ARGS[@]+"${OUT_ARGS[@]}"}" \
    --model-path "$CKPT" \
    --data-process-workers "$WORKERS" \
    --max-prompt-length 256 \
    --max-length 512 \
    --dev-num 1000 \
    "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
