# Pretraining-corpus processing launcher, sourced by scripts/<family>/tools/process_data_pretrain.sh once they have set
#   FAMILY, MODEL_NAME (the checkpoint under checkpoints/ whose tokenizer is used), HF_ID (hub id, for the fetch hint)
#   and EXTRA=(flags...) (the family's own flags, if any)
# Tokenizes a one-document-per-line text corpus (default data/openwebtext/data.txt) and packs it into 512-token chunks
# in processed_data/<corpus>/full/<family>/.
# Env: DATA_PATH, CKPT (checkpoint whose tokenizer is used), PROCESSED_DIR, WORKERS. Extra --flags go to
# tools/process_data_pretrain.py and win (e.g. --max-length 1024 --dev-num 100).
# Offline: the built-in corpus (python tools/make_synthetic_data.py writes data/synth_pretrain/data.txt), e.g.
#   DATA_PATH=data/synth_pretrain/data.txt CKPT=checkpoints/tiny-gpt2-teacher \
#       bash scripts/gpt2/tools/process_data_pretrain.sh
#   -> processed_data/synth_pretrain/full/gpt2
# Found before lib.sh cd's to the repo root, since BASH_SOURCE may be a relative path.
source "$(dirname "${BASH_SOURCE[0]}")/tokenizer_ckpt.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

DATA_PATH=${DATA_PATH:-${BASE_PATH}/data/openwebtext/data.txt}
# Without PROCESSED_DIR the tool writes to processed_data/<name of the corpus' directory>/full.
OUT_ARGS=()
if [[ -n "${PROCESSED_DIR:-}" ]]; then OUT_ARGS=(--processed-data-dir "$PROCESSED_DIR"); fi

has_flag data-path || require_path "$DATA_PATH" \
    "write the corpus there, one document per line, with each newline inside a document written as <@x(x!>"\
"  (offline: python tools/make_synthetic_data.py, then DATA_PATH=data/synth_pretrain/data.txt)"
tokenizer_ckpt "$MODEL_NAME" "$HF_ID"

run_python tools/process_data_pretrain.py \
    --data-path "$DATA_PATH" \
    "${OUT_ARGS[@]+"${OUT_ARGS[@]}"}" \
    --model-path "$CKPT" \
    --data-process-workers "$WORKERS" \
    --max-length 512 \
    --dev-num 20 \
    "${EXTRA[@]+"${EXTRA[@]}"}" \
    "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
