# Evaluation launcher, sourced by scripts/<family>/eval/run_eval.sh once it has set FAMILY.
# Generates on every evaluation set present under DATA_ROOT (dolly, self_inst, vicuna, sinst, uinst by default) for
# each seed, then prints one table of mean ± std Rouge-L. Sampling (top-p 1, temperature 1) as is usual for these sets;
# pass --no-do-sample for greedy decoding, --no-repeat-ngram-size N / --repetition-penalty P (off by default) for
# either. Each results.json and summary.json records the decoding settings it was made with.
# Environment overrides: CKPT (model or LoRA adapter directory), SAVE_PATH, DATA_ROOT, EVAL_SETS, SEEDS,
# GPUS_PER_NODE, MASTER_PORT. Any `--flag value` given to the script is passed to evaluate.py last.
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

CKPT=${CKPT:-${BASE_PATH}/results/${FAMILY}/train/sft/${MODEL_NAME}/best}
SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/eval/$(basename "$(dirname "$CKPT")")-$(basename "$CKPT")}
DATA_ROOT=${DATA_ROOT:-${BASE_PATH}/processed_data}
EVAL_SETS=${EVAL_SETS:-"dolly self_inst vicuna sinst uinst"}
SEEDS=${SEEDS:-"10 20 30 40 50"}
require_path "$CKPT" "train one first (bash scripts/${FAMILY}/sft/${SFT_SCRIPT}) or set CKPT=<model dir>"
# An incomplete checkpoint (weights, tokenizer, an interrupted save) is refused in one line, exit code 2, before any
# process starts (distill/inputs.py; evaluate.py checks again, but under torchrun every rank would say it).
trust_flag=()
if has_flag trust-remote-code; then trust_flag=(--trust-remote-code); fi
"$PYTHON" -m distill.inputs "$CKPT" --flag CKPT "${trust_flag[@]+"${trust_flag[@]}"}" || exit 2

# shellcheck disable=SC2086  # EVAL_SETS and SEEDS are word lists
launch evaluate.py \
    --model-path "$CKPT" --data-root "$DATA_ROOT" --model-type "$FAMILY" --eval-sets $EVAL_SETS --seeds $SEEDS \
    --save "$SAVE_PATH" --max-prompt-length 256 --max-new-tokens 256 --eval-batch-size 32 \
    --do-sample --top-k 0 --top-p 1.0 --temperature 1.0 "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
