# On-policy distillation launcher (GKD, ImitKD, DistiLLM), sourced by scripts/<family>/{gkd,imitkd,distillm}/*.sh once
# they have set
#   FAMILY, METHOD (gkd | imitkd | distillm), STUDENT (directory under checkpoints/), STUDENT_HF, TEACHER (SFT'd teacher
#   run under results/), TEACHER_SCRIPT, INIT_SCRIPT (the student's SFT initialisation, scripts/<family>/init/*.sh)
#   and optionally LR, BATCH_SIZE, GRAD_ACC, EPOCHS, ZERO_STAGE (or DS_NAME), TEACHER_CKPT, TEACHER_PEFT,
#   LORA_STUDENT=1 (the student is a LoRA adapter on checkpoints/<student>), DEFAULT_TYPE, INIT_THRESHOLD, LOSS_EPS,
#   LM_DATA_DIR, EXTRA=(flags...)
# The defaults are the DistiLLM repository's launchers (scripts/<family>/{gkd,imitkd,distillm}/*.sh):
#   gkd       --type mixed-jsd --mixed-alpha 0.5: half the micro-batches train on the student's own answers (fresh ones
#             go into the replay buffer and the batch is drawn from it, as that code does)
#   imitkd    --type mixed-fkl --mixed-alpha 1.0: every micro-batch
#   distillm  --type adaptive-srkl --init-threshold 0.0 --loss-eps 0.1 --replay-ratio decreasing (skew alpha 0.1, the
#             default of --skew-alpha)
#   all       --student-gen --capacity 1000, --kd-ratio 1.0, the student's answers sampled at temperature 1 (top-k 0,
#             top-p 1, one beam: the --gen-* flags), validation Rouge-L every epoch sampled at temperature 1 (top-k 0,
#             top-p 1; --no-do-sample for greedy), the teacher in the resolved precision (the release: fp16).
# A --type without a mixed-/adaptive- prefix (e.g. --type fkl) trains off-policy, on the data only, and leaves the
# on-policy flags out. The output directory is named after the type:
# results/<family>/train/<method>/<student>-<teacher>-<type>.
# Inputs, each checked before any work, with the command that makes it:
#   the student  results/<family>/train/init/<student>/best, made by scripts/<family>/<INIT_SCRIPT> (CKPT=... another,
#                e.g. CKPT=checkpoints/<student> for the pretrained model); with LORA_STUDENT=1 that path is the
#                adapter (STUDENT_PEFT=... another) on the base CKPT (default checkpoints/<student>)
#   the corpus   of the pretraining term (--lm-data-dir, weight --lm-coef 1): processed_data/openwebtext/full/<family>,
#                made by scripts/<family>/tools/process_data_pretrain.sh; LM_DATA_DIR=... another, LM_DATA_DIR=none
#                no pretraining term (GKD on GPT-2 has none, as released); --lm-data-dir DIR given to the script
#                replaces it
#   the teacher, the data and the DeepSpeed config as in scripts/common/kd.sh (TEACHER_CKPT, DATA_DIR, DS_CONFIG)
# Environment overrides: CKPT, STUDENT_PEFT, TEACHER_CKPT, TEACHER_PEFT, DATA_DIR, LM_DATA_DIR, SAVE_PATH, DS_CONFIG,
# GPUS_PER_NODE, MASTER_PORT, LR, BATCH_SIZE, GRAD_ACC, EPOCHS, KD_RATIO, MIXED_ALPHA, CAPACITY, INIT_THRESHOLD,
# LOSS_EPS, REPLAY_RATIO; every --flag given to the script goes to train_distill.py last and wins. See docs/onpolicy.md.
# Found before lib.sh cd's to the repo root, since BASH_SOURCE may be a relative path.
source "$(dirname "${BASH_SOURCE[0]}")/train_flags.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

case "${METHOD:-}" in
    gkd)      DEFAULT_TYPE=${DEFAULT_TYPE:-mixed-jsd}; MIXED_ALPHA=${MIXED_ALPHA:-0.5} ;;
    imitkd)   DEFAULT_TYPE=${DEFAULT_TYPE:-mixed-fkl}; MIXED_ALPHA=${MIXED_ALPHA:-1.0} ;;
    distillm) DEFAULT_TYPE=${DEFAULT_TYPE:-adaptive-srkl} ;;
    *) echo "error: METHOD='${METHOD:-}' — the calling script must set it to gkd, imitkd or distillm" >&2; exit 1 ;;
esac
TYPE=$(flag_value type "$DEFAULT_TYPE")
KD_RATIO=${KD_RATIO:-1.0}

# The student: the SFT initialisation (a full model, or a LoRA adapter on the pretrained base).
init_student init
kd_inputs
teacher_adapter_input
lm_corpus_flags
SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/train/${METHOD}/${STUDENT}-${TEACHER}-${TYPE}}

# The method's flags follow the schedule of the --type in effect, so another --type given to the script gets its own
# (and none of a schedule it does not have, which the trainer would only warn about).
RECIPE=(--do-sample --top-k 0 --top-p 1.0 --temperature 1.0)
case "$TYPE" in
    mixed-*|adaptive-*)
        RECIPE+=(--student-gen --capacity "${CAPACITY:-1000}"
                 --gen-do-sample --gen-temperature 1.0 --gen-top-k 0 --gen-top-p 1.0 --gen-num-beams 1) ;;
esac
case "$TYPE" in
    mixed-*) RECIPE+=(--mixed-alpha "${MIXED_ALPHA:-0.5}") ;;
    adaptive-*) RECIPE+=(--init-threshold "${INIT_THRESHOLD:-0.0}" --loss-eps "${LOSS_EPS:-0.1}"
                         --replay-ratio "${REPLAY_RATIO:-decreasing}") ;;
esac
EXTRA=("${STUDENT_FLAGS[@]+"${STUDENT_FLAGS[@]}"}" "${RECIPE[@]}" "${LM_FLAGS[@]+"${LM_FLAGS[@]}"}"
       "${EXTRA[@]+"${EXTRA[@]}"}")

kd_flags "$DEFAULT_TYPE"
launch train_distill.py "${KD_FLAGS[@]}"
