# Selective Reflection Distillation launcher, sourced by scripts/<family>/srd/*.sh once they have set
#   FAMILY, STUDENT (directory under checkpoints/), STUDENT_HF, TEACHER (SFT'd teacher run under results/),
#   TEACHER_SCRIPT, and the recipe (each overridable from the environment):
#     LR, LR_MIN (the cosine schedule's end), BATCH_SIZE, GRAD_ACC, EPOCHS (per stage), EVAL_INTERVAL/SAVE_INTERVAL
#     (-1: once per epoch), KD_RATIOS and TEMPERATURES (one value per trained stage, or one for all), optionally
#     ZERO_STAGE (or DS_NAME), TEACHER_PEFT, EXTRA=(flags...)
# One command runs tools/srd_run.py: reflection of the initial student -> easy-to-hard ranking -> stage data ->
# curriculum KD stages (train_distill.py, each with its own kd-ratio and temperature) -> best checkpoint across stages
# -> report table. Re-running it resumes: finished steps are skipped, an interrupted stage continues from its newest
# checkpoint. The divergence is --type (default tfkl; it must be a temperature kind: tfkl, trkl, tjsd, ttvd, tsfkl,
# tsrkl). SRD flags (--num-stages, --keep-stages, --rank-by, --rrf-k, --rank-ties, --stratify-by, --temperatures,
# --temperature-start/-end, --stage-init, --stage-epochs, --stage-iters, --stage-lr, --stage-lr-min,
# --stage-lr-schedule, --stage-warmup-iters, --stage-kd-ratio, --stage-eval-interval, --stage-save-interval,
# --reflect-*) go to the runner; every other flag goes through to train_distill.py.
# The defaults are the SRD release's recipe (docs/srd.md): 3 of 4 easy->hard parts ranked with the release's tie order,
# each stage from the previous stage's last checkpoint, validation Rouge-L every epoch with sampled decoding (T = 1,
# top-k 0, top-p 1; --no-do-sample for greedy), the reflection sampled at T = 0.01 with no_repeat_ngram_size 6 (the
# runner's defaults). One kd-ratio for every stage: KD_RATIO=... or --kd-ratio; one temperature schedule of your own:
# --temperatures, or --temperature-start/--temperature-end.
# Environment overrides: CKPT (student), TEACHER_CKPT, DATA_DIR, SAVE_PATH, SRD_DIR, BASELINE_DIR, DS_CONFIG,
# GPUS_PER_NODE, MASTER_PORT, and the recipe's variables above, RANK_TIES. See docs/srd.md.
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

# The recipe's per-stage values, before the caller's flags (which come last and win). A per-stage list is left out
# where the caller asked for one value for all stages: it would override that value.
# shellcheck disable=SC2206  # KD_RATIOS and TEMPERATURES are word lists
RECIPE=(--lr-min "${LR_MIN:-1e-7}" --do-sample --top-k 0 --top-p 1.0 --temperature 1.0
        --num-stages 4 --rank-by rrf --rrf-k 60 --rank-ties "${RANK_TIES:-stable}" --stage-init last)
if [[ -z "${KD_RATIO:-}" ]] && ! has_flag kd-ratio; then
    RECIPE+=(--stage-kd-ratio ${KD_RATIOS:-0.8 0.9 1.0})
fi
if ! has_flag temperature-start && ! has_flag temperature-end; then
    RECIPE+=(--temperatures ${TEMPERATURES:-1 1.5 2})
fi
EXTRA=("${RECIPE[@]}" "${EXTRA[@]+"${EXTRA[@]}"}")

kd_flags tfkl
run_python tools/srd_run.py \
    --srd-dir "$SRD_DIR" --baseline-dir "$BASELINE_DIR" --nproc-per-node "$GPUS_PER_NODE" \
    ${SRD_MASTER_PORT:+--master-port "$SRD_MASTER_PORT"} "${NODE_FLAGS[@]+"${NODE_FLAGS[@]}"}" \
    "${KD_FLAGS[@]}"
