# White-box KD launcher, sourced by scripts/<family>/kd/*.sh once they have set
#   FAMILY, STUDENT (directory under checkpoints/), STUDENT_HF, TEACHER (SFT'd teacher run under results/),
#   and optionally LR, BATCH_SIZE, GRAD_ACC, EPOCHS, ZERO_STAGE (or DS_NAME), KD_RATIO, TEACHER_PEFT, EXTRA=(flags...)
# The divergence is --type (default fkl): pass `--type rkl` etc. to the script. Its output directory is named after it.
# Environment overrides: CKPT (student), TEACHER_CKPT, DATA_DIR, SAVE_PATH, DS_CONFIG, GPUS_PER_NODE, MASTER_PORT.
# Found before lib.sh cd's to the repo root, since BASH_SOURCE may be a relative path.
source "$(dirname "${BASH_SOURCE[0]}")/train_flags.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

TYPE=$(flag_value type fkl)
kd_inputs
SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/train/${METHOD:-kd}/${STUDENT}-${TEACHER}-${TYPE}}

kd_flags fkl
launch train_distill.py "${KD_FLAGS[@]}"
