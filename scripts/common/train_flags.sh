# Training settings shared by the launchers in scripts/common/, sourced after lib.sh once the family script has set
# its defaults. It defines:
#   TRAIN_FLAGS    the optimisation, length, evaluation and seed flags of every training run (sft.sh, kd.sh, srd.sh),
#                  from LR, BATCH_SIZE, GRAD_ACC, EPOCHS, EVAL_INTERVAL, SAVE_INTERVAL, SEED. Evaluation with
#                  generation (Rouge-L) and a checkpoint once per epoch by default (-1), as the published MiniLLM and
#                  SRD scripts run (--eval-interval -1 --save-interval -1); the best checkpoint is chosen over the
#                  whole run. EVAL_INTERVAL=0 / SAVE_INTERVAL=0: only at the end; N: every N optimizer steps
#   kd_inputs      white-box KD's inputs (kd.sh, srd.sh): CKPT (student), TEACHER_CKPT, DATA_DIR and DS_CONFIG, each
#                  from the environment or its default (FAMILY, STUDENT, TEACHER; DS_NAME or ZERO_STAGE with the resolved
#                  precision), checked to exist
#   kd_flags TYPE  KD_FLAGS, the train_distill.py flags of a KD run (kd.sh; srd.sh hands them on through its runner):
#                  --type TYPE by default, then TRAIN_FLAGS, TEACHER_PEFT, the teacher's dtype (the resolved precision),
#                  and the caller's EXTRA and PASS_ARGS last so
#                  they win
TRAIN_FLAGS=(
    --lr "${LR:-5e-4}" --batch-size "${BATCH_SIZE:-8}" --gradient-accumulation-steps "${GRAD_ACC:-1}"
    --epochs "${EPOCHS:-10}" --lr-schedule cosine --warmup-iters 0 --weight-decay 1e-2 --clip-grad 1.0
    --max-length 512 --max-prompt-length 256 --max-new-tokens 256
    --eval-gen --eval-interval "${EVAL_INTERVAL:--1}" --save-interval "${SAVE_INTERVAL:--1}" --log-interval 10
    --seed "${SEED:-10}"
)

kd_inputs() {
    CKPT=${CKPT:-${BASE_PATH}/checkpoints/${STUDENT}}
    TEACHER_CKPT=${TEACHER_CKPT:-${BASE_PATH}/results/${FAMILY}/train/sft/${TEACHER}/best}
    DATA_DIR=${DATA_DIR:-${BASE_PATH}/processed_data/dolly/full/${FAMILY}}
    DS_CONFIG=${DS_CONFIG:-$(default_ds_config)}
    require_path "$CKPT" "huggingface-cli download ${STUDENT_HF} --local-dir ${CKPT}"
    require_path "$TEACHER_CKPT" "fine-tune the teacher first: bash scripts/${FAMILY}/${TEACHER_SCRIPT}"
    require_path "$DATA_DIR/train_0.bin" "bash scripts/${FAMILY}/tools/process_data_dolly.sh"
    require_path "$DS_CONFIG" "ls configs/deepspeed/"
}

kd_flags() {
    teacher_dtype_flags
    KD_FLAGS=(
        --model-path "$CKPT" --teacher-model-path "$TEACHER_CKPT" --data-dir "$DATA_DIR" --save "$SAVE_PATH"
        --deepspeed-config "$DS_CONFIG" --type "$1" --kd-ratio "${KD_RATIO:-0.5}"
        "${TRAIN_FLAGS[@]}" ${TEACHER_PEFT:+--teacher-peft-path "$TEACHER_PEFT"} "${TEACHER_DTYPE_FLAGS[@]+"${TEACHER_DTYPE_FLAGS[@]}"}"
        "${EXTRA[@]+"${EXTRA[@]}"}" "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
    )
}

# init_student DIR [LORA_DIR]: the student of a method that starts from an SFT initialisation (onpolicy.sh: init;
# minillm.sh: minillm_init), made by scripts/<family>/<INIT_SCRIPT>: CKPT=results/<family>/train/DIR/<student>/best,
# or with LORA_STUDENT=1 a LoRA adapter STUDENT_PEFT=results/<family>/train/LORA_DIR/<student>/best on CKPT
# (kd_inputs' default checkpoints/<student>), adding --peft lora --peft-path to STUDENT_FLAGS; checked to exist.
init_student() {
    local dir=$1 lora_dir=${2:-$1}
    INIT_HINT="bash scripts/${FAMILY}/${INIT_SCRIPT}"
    STUDENT_FLAGS=()
    if [[ "${LORA_STUDENT:-}" == 1 ]]; then
        STUDENT_PEFT=${STUDENT_PEFT:-${BASE_PATH}/results/${FAMILY}/train/${lora_dir}/${STUDENT}/best}
        STUDENT_FLAGS=(--peft lora)
        if ! has_flag peft-path; then
            require_path "$STUDENT_PEFT" "$INIT_HINT (or STUDENT_PEFT=<adapter dir>)"
            STUDENT_FLAGS+=(--peft-path "$STUDENT_PEFT")
        fi
    else
        CKPT=${CKPT:-${BASE_PATH}/results/${FAMILY}/train/${dir}/${STUDENT}/best}
        require_path "$CKPT" "$INIT_HINT (or CKPT=checkpoints/${STUDENT} to start from the pretrained model)"
    fi
}

# teacher_adapter_input: a LoRA teacher's adapter (TEACHER_PEFT) must exist, unless --teacher-peft-path is given.
teacher_adapter_input() {
    if [[ -n "${TEACHER_PEFT:-}" ]] && ! has_flag teacher-peft-path; then
        require_path "$TEACHER_PEFT" "fine-tune the teacher first: bash scripts/${FAMILY}/${TEACHER_SCRIPT}"
    fi
}

# lm_corpus_flags: LM_FLAGS, the pretraining term's corpus (--lm-data-dir): LM_DATA_DIR, default
# processed_data/openwebtext/full/<family> (made by scripts/<family>/tools/process_data_pretrain.sh), checked to
# exist; LM_DATA_DIR=none: no pretraining term; --lm-data-dir given to the script replaces it (unchecked here).
lm_corpus_flags() {
    LM_DATA_DIR=${LM_DATA_DIR:-${BASE_PATH}/processed_data/openwebtext/full/${FAMILY}}
    LM_FLAGS=()
    if [[ "$LM_DATA_DIR" != none ]] && ! has_flag lm-data-dir; then
        require_path "$LM_DATA_DIR/train_0.bin" \
            "bash scripts/${FAMILY}/tools/process_data_pretrain.sh (or LM_DATA_DIR=none: no pretraining term)"
        LM_FLAGS=(--lm-data-dir "$LM_DATA_DIR")
    fi
}
