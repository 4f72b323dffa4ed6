# Selective Reflection Distillation launcher, sourced by scripts/<family>/srd/*.sh once they have set
#   FAMILY, STUDENT (directory under checkpoints/), STUDENT_HF, TEACHER (SFT'd teacher run under results/),
#   TEACHER_SCRIPT, and optionally LR, BATCH_SIZE, GRAD_ACC, EPOCHS (per stage), ZERO_STAGE (or DS_NAME), KD_RATIO, TEACHER_PEFT,
#   EXTRA=(flags...)
# One command runs tools/srd_run.py: reflection of the initial student -> easy-to-hard ranking -> stage data ->
# curriculum KD stages (train_distill.py, rising temperature) -> best checkpoint across stages -> report table.
# Re-running it resumes: finished steps are skipped, an interrupted stage continues from its newest checkpoint.
# The divergence is --type (default tfkl; it must be a temperature kind: tfkl, trkl, tjsd, ttvd, tsfkl, tsrkl).
# SRD flags (--num-stages, --keep-stages, --rank-by, --rrf-k, --stratify-by, --temperatures,
# --temperature-start/-end, --stage-init, --stage-epochs, --stage-iters, --reflect-*) go to the runner; every other
# flag goes through to train_distill.py.
# Environment overrides: CKPT (student), TEACHER_CKPT, DATA_DIR, SAVE_PATH, SRD_DIR, BASELINE_DIR, DS_CONFIG,
# GPUS_PER_NODE, MASTER_PORT. See docs/srd.md.
# Several nodes (docs/multinode.md): run the same command on every node with NNODES, NODE_RANK and MASTER_ADDR (and
# MASTER_PORT, default 29500); each node's runner starts its part of every step, and only node 0 writes files.
SRD_MASTER_PORT=${MASTER_PORT:-}  # only a port the user chose is pinned; otherwise each launch takes a free one
# Found before lib.sh cd's to the repo root, since BASH_SOURCE may be a relative path.
source "$(dirname "${BASH_SOURCE[0]}")/train_flags.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

if [[ -n "${HOSTFILE:-}" ]]; then
    echo "error: the SRD runner starts torchrun on each node, not DeepSpeed's launcher (HOSTFILE=$HOSTFILE): unset" \
         "HOSTFILE and run this command on every node with NNODES, NODE_RANK and MASTER_ADDR" >&2
    exit 1
fi
check_nodes
NODE_FLAGS=()
if [[ "$NNODES" != 1 ]]; then
    NODE_FLAGS=(--nnodes "$NNODES" --node-rank "$NODE_RANK" --master-addr "$MASTER_ADDR")
    SRD_MASTER_PORT=$(master_port)  # pinned: every node's runner must give its torchruns the same port
fi
TYPE=$(flag_value type tfkl)
kd_inputs
SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/train/srd/${STUDENT}-${TEACHER}-${TYPE}}
SRD_DIR=${SRD_DIR:-${DATA_DIR}/srd/${STUDENT}}
# The plain KD run of the same pair and --type (scripts/<family>/kd/*.sh writes it there), for the report.
BASELINE_DIR=${BASELINE_DIR:-${BASE_PATH}/results/${FAMILY}/train/kd/${STUDENT}-${TEACHER}-${TYPE}}

kd_flags tfkl
run_python tools/srd_run.py \
    --srd-dir "$SRD_DIR" --baseline-dir "$BASELINE_DIR" --nproc-per-node "$GPUS_PER_NODE" \
    ${SRD_MASTER_PORT:+--master-port "$SRD_MASTER_PORT"} "${NODE_FLAGS[@]+"${NODE_FLAGS[@]}"}" \
    --num-stages 4 --rank-by rrf --rrf-k 60 --temperature-start 1.0 --temperature-end 2.0 --stage-init last \
    "${KD_FLAGS[@]}"
