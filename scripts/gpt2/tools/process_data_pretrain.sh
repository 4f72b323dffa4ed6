#!/usr/bin/env bash
# Tokenize a one-document-per-line text corpus (default data/openwebtext/data.txt) for gpt2-family models and pack it
# into 512-token chunks in processed_data/<corpus>/full/gpt2/.
# Env: DATA_PATH, CKPT (checkpoint whose tokenizer is used), PROCESSED_DIR, WORKERS. Extra --flags go to
# tools/process_data_pretrain.py and win (e.g. --max-length 1024 --dev-num 100).
source "$(dirname "${BASH_SOURCE[0]}")/../../lib.sh" "$@"

DATA_PATH=${DATA_PATH:-${BASE_PATH}/data/openwebtext/data.txt}
# Any gpt2-family checkpoint with the same tokenizer works; offline: CKPT=checkpoints/tiny-gpt2-teacher.
CKPT=${CKPT:-${BASE_PATH}/checkpoints/gpt2-base}
WORKERS=${WORKERS:-$(nproc)}
# Without PROCESSED_DIR the tool writes to processed_data/<name of the corpus' directory>/full.
OUT_ARGS=()
if [[ -n "${PROCESSED_DIR:-}" ]]; then OUT_ARGS=(--processed-data-dir "$PROCESSED_DIR"); fi

has_flag data-path || require_path "$DATA_PATH" \
    "write the corpus there, one document per line, with each newline inside a document written as <@x(x!>"
has_flag model-path || require_path "$CKPT" \
    "huggingface-cli download openai-community/gpt2 --local-dir $CKPT"\
"  (offline: python tools/make_tiny_models.py, then CKPT=checkpoints/tiny-gpt2-teacher)"

run_python tools/process_data_pretrain.py \
    --data-path "$DATA_PATH" \
    "${OUT_ARGS[@]+"${OUT_ARGS[@]}"}" \
    --model-path "$CKPT" \
    --data-process-workers "$WORKERS" \
    --max-length 512 \
    --dev-num 20 \
    "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
