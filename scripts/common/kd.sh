# White-box KD launcher, sourced by scripts/<family>/kd/*.sh once they have set
#   FAMILY, STUDENT (directory under checkpoints/), STUDENT_HF, TEACHER (SFT'd teacher run under results/),
#   and optionally LR, BATCH_SIZE, GRAD_ACC, EPOCHS, DS_NAME, KD_RATIO, TEACHER_PEFT, EXTRA=(flags...)
# The divergence is --type (default fkl): pass `--type rkl` etc. to the script. Its output directory is named after it.
# Environment overrides: CKPT (student), TEACHER_CKPT, DATA_DIR, SAVE_PATH, DS_CONFIG, GPUS_PER_NODE, MASTER_PORT.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

TYPE=$(flag_value type fkl)
CKPT=${CKPT:-${BASE_PATH}/checkpoints/${STUDENT}}
TEACHER_CKPT=${TEACHER_CKPT:-${BASE_PATH}/results/${FAMILY}/train/sft/${TEACHER}/best}
DATA_DIR=${DATA_DIR:-${BASE_PATH}/processed_data/dolly/full/${FAMILY}}
SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/train/${METHOD:-kd}/${STUDENT}-${TEACHER}-${TYPE}}
DS_CONFIG=${DS_CONFIG:-${BASE_PATH}/configs/deepspeed/${DS_NAME:-ds_config_zero1_bf16}.json}
require_path "$CKPT" "huggingface-cli download ${STUDENT_HF} --local-dir ${CKPT}"
require_path "$TEACHER_CKPT" "fine-tune the teacher first: bash scripts/${FAMILY}/${TEACHER_SCRIPT}"
require_path "$DATA_DIR/train_0.bin" "bash scripts/${FAMILY}/tools/process_data_dolly.sh"
require_path "$DS_CONFIG" "ls configs/deepspeed/"

launch train_distill.py \
    --model-path "$CKPT" --teacher-model-path "$TEACHER_CKPT" --data-dir "$DATA_DIR" --save "$SAVE_PATH" \
    --deepspeed-config "$DS_CONFIG" --type fkl --kd-ratio "${KD_RATIO:-0.5}" \
    --lr "${LR:-5e-4}" --batch-size "${BATCH_SIZE:-8}" --gradient-accumulation-steps "${GRAD_ACC:-1}" \
    --epochs "${EPOCHS:-10}" --lr-schedule cosine --warmup-iters 0 --weight-decay 1e-2 --clip-grad 1.0 \
    --max-length 512 --max-prompt-length 256 --max-new-tokens 256 --group-by-length \
    --eval-gen --eval-interval "${EVAL_INTERVAL:-0}" --save-interval "${SAVE_INTERVAL:-0}" --log-interval 10 \
    --seed "${SEED:-10}" ${TEACHER_PEFT:+--teacher-peft-path "$TEACHER_PEFT"} \
    "${EXTRA[@]+"${EXTRA[@]}"}" "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
