# Supervised fine-tuning launcher, sourced by scripts/<family>/sft/*.sh once they have set
#   FAMILY, MODEL_NAME (directory under checkpoints/), HF_ID (hub id, for the fetch hint)
#   and optionally LR, BATCH_SIZE, GRAD_ACC, EPOCHS, ZERO_STAGE (or DS_NAME), EXTRA=(flags...), METHOD (the directory
#   under results/<family>/train/, default sft; the on-policy students' initialisation scripts/<family>/init/ says init)
# Environment overrides: CKPT, DATA_DIR, SAVE_PATH, DS_CONFIG, GPUS_PER_NODE, MASTER_PORT.
# Any `--flag value` given to the script is passed to train_sft.py last, so it wins.
# Found before lib.sh cd's to the repo root, since BASH_SOURCE may be a relative path.
source "$(dirname "${BASH_SOURCE[0]}")/train_flags.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

CKPT=${CKPT:-${BASE_PATH}/checkpoints/${MODEL_NAME}}
DATA_DIR=${DATA_DIR:-${BASE_PATH}/processed_data/dolly/full/${FAMILY}}
SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/train/${METHOD:-sft}/${MODEL_NAME}}
DS_CONFIG=${DS_CONFIG:-$(default_ds_config)}
require_path "$CKPT" "huggingface-cli download ${HF_ID} --local-dir ${CKPT}"
require_path "$DATA_DIR/train_0.bin" "bash scripts/${FAMILY}/tools/process_data_dolly.sh"
require_path "$DS_CONFIG" "ls configs/deepspeed/"

launch train_sft.py \
    --model-path "$CKPT" --data-dir "$DATA_DIR" --save "$SAVE_PATH" --deepspeed-config "$DS_CONFIG" \
    "${TRAIN_FLAGS[@]}" "${EXTRA[@]+"${EXTRA[@]}"}" "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
