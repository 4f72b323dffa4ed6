# Instruction-data processing launcher, sourced by scripts/<family>/tools/process_data_dolly.sh once they have set
#   FAMILY, MODEL_NAME (the checkpoint under checkpoints/ whose tokenizer is used), HF_ID (hub id, for the fetch hint)
#   and EXTRA=(flags...) (the family's own flags, e.g. --chat-template)
# Tokenizes instruction data (default data/dolly) into processed_data/<data>/full/<family>/.
# Env: DATA_DIR (raw.jsonl, or train.jsonl + valid.jsonl), CKPT (checkpoint whose tokenizer is used), PROCESSED_DIR,
# WORKERS. Extra --flags go to tools/process_data_dolly.py and win, e.g. --eval-set --dev-num 0 for an evaluation set.
# Found before lib.sh cd's to the repo root, since BASH_SOURCE may be a relative path.
source "$(dirname "${BASH_SOURCE[0]}")/tokenizer_ckpt.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

DATA_DIR=${DATA_DIR:-${BASE_PATH}/data/dolly}
# Without PROCESSED_DIR the tool writes to processed_data/<basename of the data dir>/full.
OUT_ARGS=()
if [[ -n "${PROCESSED_DIR:-}" ]]; then OUT_ARGS=(--processed-data-dir "$PROCESSED_DIR"); fi

has_flag data-dir || require_path "$DATA_DIR" \
    "copy databricks-dolly-15k.jsonl to $DATA_DIR/raw.jsonl"\
"  (offline: python tools/make_synthetic_data.py, then DATA_DIR=data/synth)"
tokenizer_ckpt "$MODEL_NAME" "$HF_ID"

run_python tools/process_data_dolly.py \
    --data-dir "$DATA_DIR" \
    "${OUT_ARGS[@]+"${OUT_ARGS[@]}"}" \
    --model-path "$CKPT" \
    --data-process-workers "$WORKERS" \
    --max-prompt-length 256 \
    --max-length 512 \
    --dev-num 1000 \
    "${EXTRA[@]+"${EXTRA[@]}"}" \
    "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
