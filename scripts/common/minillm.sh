# MiniLLM launcher (train_minillm.py: policy-gradient reverse-KL distillation), sourced by scripts/<family>/minillm/
# train_*.sh once they have set
#   FAMILY, STUDENT (directory under checkpoints/), STUDENT_HF, TEACHER (SFT'd teacher run under results/),
#   TEACHER_SCRIPT, INIT_SCRIPT (the student's MiniLLM initialisation, scripts/<family>/minillm/init_*.sh)
#   and optionally BATCH_SIZE, GRAD_ACC, CHUNK_SIZE, LR_SCHEDULE, ZERO_STAGE (or DS_NAME), TEACHER_CKPT, TEACHER_HF,
#   TEACHER_PEFT, LORA_STUDENT=1 (the student is a LoRA adapter on checkpoints/<student>), EXTRA=(flags...)
# The defaults are the LMOps minillm/ launchers' (scripts/{gpt2,opt,llama}/minillm/train_*.sh, the same values in
# every one but the batch and chunk sizes): --type minillm, lr 5e-6 after 100 warm-up steps, then constant (the
# release's --lr-min 5e-6 is not read by its PPO trainer, whose default schedule is constant; its LLaMA scripts say
# --scheduler-name cosine_trm, a cosine decay to 0 over --total-iters: LR_SCHEDULE=cosine), AdamW (0.9, 0.95) with
# weight decay 1e-6 and gradient clipping 1.0 (fixed in its trainer), 5000 steps or 10 passes over the prompts,
# whichever comes first, --max-length 512 --max-prompt-length 256, 256 rollouts per store, 4 PPO epochs, chunks of
# CHUNK_SIZE prompts per generation call, --length-norm --single-step-reg, --teacher-mixed-alpha 0.2,
# --reward-scaling 0.5 --cliprange-reward 100, the pretraining term with --kd-ratio 0.5, seeds 10 (--seed), 42
# (--seed-ppo) and 7 (--seed-lm), sampling at temperature 1 with top-k 0, top-p 1; validation (1000 examples, loss
# and sampled Rouge-L: the best checkpoint by Rouge-L, as the release selects) every 100 steps, a checkpoint every
# 500, a log line every 16; the teacher in the resolved precision (the release: fp16). Responses are sampled up to
# --max-new-tokens 256 (the release: up to the rest of --max-length, 512 minus the chunk's longest prompt; the two
# agree for every response of at most 256 tokens). Not passed: --num-workers 0 (the default), --mid-log-num
# (logging only), --model-parallel (not supported: ZeRO partitions instead).
# The output directory: results/<family>/train/minillm/<student>[-lora]-<teacher>[-no_pt].
# Inputs, each checked before any work, with the command that makes it:
#   the student  results/<family>/train/minillm_init/<student>/best, the SFT run selected by validation loss that
#                scripts/<family>/<INIT_SCRIPT> makes (CKPT=... another, e.g. CKPT=checkpoints/<student> for the
#                pretrained model); with LORA_STUDENT=1 the adapter results/<family>/train/minillm_init_lora/<student>/
#                best (STUDENT_PEFT=... another) on the base CKPT (default checkpoints/<student>)
#   the corpus   of the pretraining term (--lm-data-dir): processed_data/openwebtext/full/<family>, made by
#                scripts/<family>/tools/process_data_pretrain.sh (the release: OpenWebText for GPT-2, its RoBERTa
#                corpus for OPT and LLaMA; LM_DATA_DIR=... another); LM_DATA_DIR=none drops the term, the release's
#                train_*_no_pt.sh; --lm-data-dir DIR given to the script replaces it
#   the teacher, the data and the DeepSpeed config as in scripts/common/kd.sh (TEACHER_CKPT, DATA_DIR, DS_CONFIG)
# Environment overrides: CKPT, STUDENT_PEFT, TEACHER_CKPT, TEACHER_PEFT, DATA_DIR, LM_DATA_DIR, SAVE_PATH, DS_CONFIG,
# ZERO_STAGE, GPUS_PER_NODE, MASTER_PORT, LR, LR_SCHEDULE, WARMUP_ITERS, BATCH_SIZE, GRAD_ACC, CHUNK_SIZE, EPOCHS,
# TOTAL_ITERS, EVAL_INTERVAL, SAVE_INTERVAL, SEED, SEED_PPO, SEED_LM, KD_RATIO, PPO_EPOCHS, NUM_ROLLOUTS,
# TEACHER_MIXED_ALPHA, REWARD_SCALING, CLIPRANGE_REWARD; every --flag given to the script goes to train_minillm.py
# last and wins. See docs/minillm.md.
# Found before lib.sh cd's to the repo root, since BASH_SOURCE may be a relative path.
source "$(dirname "${BASH_SOURCE[0]}")/train_flags.sh"
source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh" "$@"

# The student: the MiniLLM initialisation (a full model, or a LoRA adapter on the pretrained base).
init_student minillm_init minillm_init_lora
NAME=${STUDENT}
if [[ "${LORA_STUDENT:-}" == 1 ]]; then NAME=${STUDENT}-lora; fi
if [[ -n "${TEACHER_PEFT:-}" && -n "${TEACHER_HF:-}" ]]; then
    # A LoRA teacher: its base is a download, not a run of TEACHER_SCRIPT (kd_inputs' hint for TEACHER_CKPT).
    TEACHER_CKPT=${TEACHER_CKPT:-${BASE_PATH}/checkpoints/${TEACHER}}
    require_path "$TEACHER_CKPT" "huggingface-cli download ${TEACHER_HF} --local-dir ${TEACHER_CKPT}"
fi
kd_inputs
teacher_adapter_input
lm_corpus_flags
# A run without the pretraining term gets its own directory (the release's train_*_no_pt.sh).
SUFFIX=""
if [[ "$LM_DATA_DIR" == none ]] && ! has_flag lm-data-dir; then SUFFIX=-no_pt; fi
SAVE_PATH=${SAVE_PATH:-${BASE_PATH}/results/${FAMILY}/train/minillm/${NAME}-${TEACHER}${SUFFIX}}

teacher_dtype_flags
MINILLM_FLAGS=(
    --model-path "$CKPT" "${STUDENT_FLAGS[@]+"${STUDENT_FLAGS[@]}"}" --teacher-model-path "$TEACHER_CKPT"
    ${TEACHER_PEFT:+--teacher-peft-path "$TEACHER_PEFT"} "${TEACHER_DTYPE_FLAGS[@]+"${TEACHER_DTYPE_FLAGS[@]}"}"
    --data-dir "$DATA_DIR" "${LM_FLAGS[@]+"${LM_FLAGS[@]}"}" --dev-num 1000
    --save "$SAVE_PATH" --deepspeed-config "$DS_CONFIG" --type minillm
    # optimisation
    --lr "${LR:-5e-6}" --lr-schedule "${LR_SCHEDULE:-constant}" --warmup-iters "${WARMUP_ITERS:-100}"
    --adam-beta1 0.9 --adam-beta2 0.95 --weight-decay 1e-6 --clip-grad 1.0
    --batch-size "${BATCH_SIZE:-16}" --gradient-accumulation-steps "${GRAD_ACC:-1}"
    --epochs "${EPOCHS:-10}" --total-iters "${TOTAL_ITERS:-5000}"
    --max-length 512 --max-prompt-length 256 --max-new-tokens 256
    # PPO and MiniLLM
    --ppo-epochs "${PPO_EPOCHS:-4}" --num-rollouts "${NUM_ROLLOUTS:-256}" --chunk-size "${CHUNK_SIZE:-16}"
    --length-norm --single-step-reg --teacher-mixed-alpha "${TEACHER_MIXED_ALPHA:-0.2}"
    --reward-scaling "${REWARD_SCALING:-0.5}" --cliprange-reward "${CLIPRANGE_REWARD:-100}"
    --kd-ratio "${KD_RATIO:-0.5}"
    # sampling (rollouts and validation Rouge-L)
    --do-sample --top-k 0 --top-p 1.0 --temperature 1.0
    # runtime
    --seed "${SEED:-10}" --seed-ppo "${SEED_PPO:-42}" --seed-lm "${SEED_LM:-7}"
    --eval-gen --eval-interval "${EVAL_INTERVAL:-100}" --save-interval "${SAVE_INTERVAL:-500}" --log-interval 16
    "${EXTRA[@]+"${EXTRA[@]}"}" "${PASS_ARGS[@]+"${PASS_ARGS[@]}"}"
)
launch train_minillm.py "${MINILLM_FLAGS[@]}"
