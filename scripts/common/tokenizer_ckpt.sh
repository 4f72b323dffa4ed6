# Shared by the launchers of the processing tools (process_data_dolly.sh, process_data_pretrain.sh, seqkd.sh's process
# stage), sourced after lib.sh.
# tokenizer_ckpt NAME HF_ID: sets CKPT, the checkpoint whose tokenizer is used (the environment's, else
# checkpoints/NAME), and WORKERS (default: one per core); stops at once with a fetch hint naming HF_ID when CKPT is
# missing, unless --model-path is passed through.
tokenizer_ckpt() {
    # Any checkpoint of the family works: they share one tokenizer (offline: CKPT=checkpoints/tiny-<family>-teacher).
    CKPT=${CKPT:-${BASE_PATH}/checkpoints/$1}
    WORKERS=${WORKERS:-$(nproc)}
    has_flag model-path || require_path "$CKPT" \
        "huggingface-cli download $2 --local-dir $CKPT"\
"  (offline: python tools/make_tiny_models.py, then CKPT=checkpoints/tiny-${FAMILY}-teacher)"
}
