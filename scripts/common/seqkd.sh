# Sequence-level KD (SeqKD) launcher: the SFT'd teacher answers every training prompt, and the student is fine-tuned
# on those answers. Sourced, once they have set FAMILY, TEACHER (its SFT run under results/<family>/train/sft/) and
# SEQKD_STAGE, by:
#   generate  scripts/<family>/tools/generate_data_seqkd.sh        tools/generate_data.py (torchrun, resumable)
#             also TEACHER_SCRIPT (the teacher's SFT launcher, for the hint); optional TEACHER_CKPT, TEACHER_PEFT, DTYPE
#   process   scripts/<family>/tools/process_pseudo_data_seqkd.sh  tools/process_data_dolly.py on those answers
#             also TOKENIZER_MODEL (directory under checkpoints/), TOKENIZER_HF; optional PROCESS_EXTRA=(flags...)
#   train     scripts/<family>/seqkd/seqkd_<size>.sh               SFT of the student on them (scripts/common/sft.sh)
#             also STUDENT (directory under checkpoints/), STUDENT_HF; optional LR, BATCH_SIZE, GRAD_ACC, EPOCHS,
#             ZERO_STAGE (or DS_NAME), EXTRA=(flags...)
# The stages meet at fixed places (relative to the repo), so the three scripts run one after another with no settings:
#   processed_data/dolly/full/<family>/            input: the processed Dolly prompts (process_data_dolly.sh)
#   data/dolly_seqkd/<teacher>/{train,valid}.jsonl the teacher's answers (valid.jsonl: the original records)
#   processed_data/dolly/pseudo/<teacher>/<family>/  those answers, processed
#   results/<family>/train/seqkd/<student>-<teacher>/  the student run
# Environment overrides, per stage (as in the sibling scripts, DATA_DIR is always the stage's input):
#   generate: TEACHER_CKPT, TEACHER_PEFT, DATA_DIR, SAVE_PATH, DTYPE, GPUS_PER_NODE, MASTER_PORT
#   process:  DATA_DIR, PROCESSED_DIR (the tool writes <PROCESSED_DIR>/<family>/), CKPT (tokenizer), WORKERS
#   train:    CKPT (student), DATA_DIR, SAVE_PATH, DS_CONFIG, GPUS_PER_NODE, MASTER_PORT
# Any `--flag value` given to a script is passed to its Python tool last, so it wins (e.g. --no-do-sample).
# Found before lib.sh cd's to the repo root, since BASH_SOURCE may be a relative path.
SEQKD_COMMON_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "${SEQKD_COMMON_DIR}/tokenizer_ckpt.sh"
source "${SEQKD_COMMON_DIR}/../lib.sh" "$@"

SEQKD_RAW=${BASE_PATH}/data/dolly_seqkd/${TEACHER}
SEQKD_PROCESSED=${BASE_PATH}/processed_data/dolly/pseudo/${TEACHER}

case "${SEQKD_STAGE:-}" in
generate)
    TEACHER_CKPT=${TEACHER_CKPT:-${BASE_PATH}/results/${FAMILY}/train/sft/${TEACHER}/best}
    DATA_DIR=${DATA_DIR:-${BASE_PATH}/processed_data/dolly/full/${FAMILY}}
    SAVE_PATH=${SAVE_PATH:-${SEQKD_RAW}}
    has_flag model-path || require_path "$TEACHER_CKPT" \
        "fine-tune the teacher first: bash scripts/${FAMILY}/${TEACHER_SCRIPT} (or set TEACHER_CKPT=<model dir>)"
    if [[ -n "${TEACHER_PEFT:-}" ]] && ! has_flag peft-path; then
        require_path "$TEACHER_PEFT" "fine-tune the teacher first: bash scripts/${FAMILY}/${TEACHER_SCRIPT}"
    fi
    has_flag data-dir || require_path "$DATA_DIR/train_0.bin" "bash scripts/${FAMILY}/tools/process_data_dolly.sh"
    # Sampled at temperature 1 (the teacher's own distribution), like the evaluation; --no-do-sample for greedy;
    # --no-repeat-ngram-size / --repetition-penalty (off by default) are part of the resumable parts' settings.
    launch tools/generate_data.py \
        --model-path "$TEACHER_CKPT" ${TEACHER_PEFT:+--peft-path "$TEACHER_PEFT"} --data-dir "$DATA_DIR" \
        --split train --save "$SAVE_PATH" --dtype "${DTYPE:-$PRECISION_RESOLVED}" --max-prompt-length 256 --max-new-tokens 256 \
        --do-sample --top-k 0 --top-p 1.0 --temperature 1.0 --eval-batch-size 32 --part-size 1000 --seed 10 \
        "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
    ;;
process)
    DATA_DIR=${DATA_DIR:-${SEQKD_RAW}}
    PROCESSED_DIR=${PROCESSED_DIR:-${SEQKD_PROCESSED}}
    has_flag data-dir || require_path "$DATA_DIR/train.jsonl" "bash scripts/${FAMILY}/tools/generate_data_seqkd.sh"
    tokenizer_ckpt "$TOKENIZER_MODEL" "$TOKENIZER_HF"
    # --model-type pins the output to <PROCESSED_DIR>/<family>/, where the train stage looks.
    run_python tools/process_data_dolly.py \
        --data-dir "$DATA_DIR" --processed-data-dir "$PROCESSED_DIR" --model-path "$CKPT" --model-type "$FAMILY" \
        --data-process-workers "$WORKERS" --max-prompt-length 256 --max-length 512 --dev-num 1000 \
        "${PROCESS_EXTRA[@]+"${PROCESS_EXTRA[@]}"}" "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
    ;;
train)
    MODEL_NAME=${STUDENT}; HF_ID=${STUDENT_HF}
    DATA_DIR=${DATA_DIR:-${SEQKD_PROCESSED}/${FAMILY}}
    SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/train/seqkd/${STUDENT}-${TEACHER}}
    # Checked here so the hint names the SeqKD steps (sft.sh's own check would point at the ground-truth data).
    require_path "$DATA_DIR/train_0.bin" "bash scripts/${FAMILY}/tools/generate_data_seqkd.sh &&"\
" bash scripts/${FAMILY}/tools/process_pseudo_data_seqkd.sh"
    source "${SEQKD_COMMON_DIR}/sft.sh" "$@"
    ;;
*)
    echo "error: SEQKD_STAGE='${SEQKD_STAGE:-}' — the calling script must set it to generate, process or train" >&2
    exit 1
    ;;
esac
