# Selective Reflection Distillation launcher, sourced by scripts/<family>/srd/*.sh once they have set
#   FAMILY, STUDENT (directory under checkpoints/), STUDENT_HF, TEACHER (SFT'd teacher run under results/),
#   TEACHER_SCRIPT, and optionally LR, BATCH_SIZE, GRAD_ACC, EPOCHS (per stage), DS_NAME, KD_RATIO, TEACHER_PEFT,
#   EXTRA=(flags...)
# One command runs tools/srd_run.py: reflection of the initial student -> easy-to-hard ranking -> stage data ->
# curriculum KD stages (train_distill.py, rising temperature) -> best checkpoint across stages -> report table.
# Re-running it resumes: finished steps are skipped, an interrupted stage continues from its newest checkpoint.
# The divergence is --type (default tfkl; it must be a temperature kind: tfkl, trkl, tjsd, ttvd, tsfkl, tsrkl).
# SRD flags (--num-stages, --keep-stages, --rank-by, --rrf-k, --temperatures, --temperature-start/-end, --stage-init,
# --stage-epochs, --stage-iters, --reflect-*) go to the runner; every other flag goes through to train_distill.py.
# Environment overrides: CKPT (student), TEACHER_CKPT, DATA_DIR, SAVE_PATH, SRD_DIR, BASELINE_DIR, DS_CONFIG,
# GPUS_PER_NODE, MASTER_PORT. See docs/srd.md.
SRD_MASTER_PORT=${MASTER_PORT:-}  # only a port the user chose is pinned; otherwise each launch takes a free one
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

if [[ "$NNODES" != 1 ]]; then
    echo "error: the SRD runner starts its stages on this node only (NNODES=$NNODES); run with NNODES=1" >&2
    exit 1
fi
TYPE=$(flag_value type tfkl)
CKPT=${CKPT:-${BASE_PATH}/checkpoints/${STUDENT}}
TEACHER_CKPT=${TEACHER_CKPT:-${BASE_PATH}/results/${FAMILY}/train/sft/${TEACHER}/best}
DATA_DIR=${DATA_DIR:-${BASE_PATH}/processed_data/dolly/full/${FAMILY}}
SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/train/srd/${STUDENT}-${TEACHER}-${TYPE}}
SRD_DIR=${SRD_DIR:-${DATA_DIR}/srd/${STUDENT}}
# The plain KD run of the same pair and --type (scripts/<family>/kd/*.sh writes it there), for the report.
BASELINE_DIR=${BASELINE_DIR:-${BASE_PATH}/results/${FAMILY}/train/kd/${STUDENT}-${TEACHER}-${TYPE}}
DS_CONFIG=${DS_CONFIG:-${BASE_PATH}/configs/deepspeed/${DS_NAME:-ds_config_zero1_bf16}.json}
require_path "$CKPT" "huggingface-cli download ${STUDENT_HF} --local-dir ${CKPT}"
require_path "$TEACHER_CKPT" "fine-tune the teacher first: bash scripts/${FAMILY}/${TEACHER_SCRIPT}"
require_path "$DATA_DIR/train_0.bin" "bash scripts/${FAMILY}/tools/process_data_dolly.sh"
require_path "$DS_CONFIG" "ls configs/deepspeed/"

run_python tools/srd_run.py \
    --srd-dir "$SRD_DIR" --baseline-dir "$BASELINE_DIR" --nproc-per-node "$GPUS_PER_NODE" \
    ${SRD_MASTER_PORT:+--master-port "$SRD_MASTER_PORT"} \
    --num-stages 4 --rank-by rrf --rrf-k 60 --temperature-start 1.0 --temperature-end 2.0 --stage-init last \
    --model-path "$CKPT" --teacher-model-path "$TEACHER_CKPT" --data-dir "$DATA_DIR" --save "$SAVE_PATH" \
    --deepspeed-config "$DS_CONFIG" --type tfkl --kd-ratio "${KD_RATIO:-0.5}" \
    --lr "${LR:-5e-4}" --batch-size "${BATCH_SIZE:-8}" --gradient-accumulation-steps "${GRAD_ACC:-1}" \
    --epochs "${EPOCHS:-10}" --lr-schedule cosine --warmup-iters 0 --weight-decay 1e-2 --clip-grad 1.0 \
    --max-length 512 --max-prompt-length 256 --max-new-tokens 256 --group-by-length \
    --eval-gen --eval-interval "${EVAL_INTERVAL:-0}" --save-interval "${SAVE_INTERVAL:-0}" --log-interval 10 \
    --seed "${SEED:-10}" ${TEACHER_PEFT:+--teacher-peft-path "$TEACHER_PEFT"} \
    "${EXTRA[@]+"${EXTRA[@]}"}" "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
