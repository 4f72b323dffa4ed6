#!/usr/bin/env bash
# The offline quick start, on CPU: built-in synthetic data and tiny GPT-2 teacher/student, run through the same
# launchers a GPU user runs (process_data_dolly.sh, sft_*.sh, run_eval.sh), then one table of results.
# Steps whose outputs exist are skipped, an interrupted training stage resumes; FRESH=1 starts over. Output:
# results/quickstart/ (QS_DIR overrides).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

QS_DIR=${QS_DIR:-results/quickstart}
FAMILY=gpt2
# The teacher trains and teaches in the precision lib.sh resolved for this machine: bf16 where it is native (1.3x
# faster on a CPU with AVX512-BF16, same quality), fp32 elsewhere (emulated bf16 was ~60x slower on an AVX2 CPU);
# PRECISION=fp32|bf16 forces one. The students' matrices are too small for bf16 to pay, so they stay fp32.
DS_TEACHER=configs/deepspeed/ds_config_zero1_${PRECISION_RESOLVED}.json
DS=configs/deepspeed/ds_config_zero0_fp32.json
DATA=processed_data/synth/full/${FAMILY}
# The built-in pretraining corpus (docs/synthetic_data.md), processed for the pretraining term (--lm-data-dir) in
# chunks of the runs' --max-length. The quick start's own runs do not use it; it is there to add to a KD run.
CORPUS=data/synth_pretrain/data.txt
LM_DATA=processed_data/synth_pretrain/full/${FAMILY}
# Sized so the whole run fits in 15 minutes on a 2-core CPU without native bf16 (AVX2 only) with a clear
# teacher/student gap (docs/quickstart.md has the measured breakdown).
TEACHER_EPOCHS=${TEACHER_EPOCHS:-3}
STUDENT_EPOCHS=${STUDENT_EPOCHS:-2}
BATCH=32
# --length-pieces 4: each batch of 32 runs as 4 pieces of similar length, each padded to its own longest row — the
# same examples and loss per step with 14% padding instead of 45%.
# --resume: a stage interrupted before its best checkpoint continues where it stopped when the quick start is re-run
# (a fresh directory just starts; the SRD runner resumes by itself and drops the flag).
COMMON=(--batch-size "$BATCH" --gradient-accumulation-steps 1 --length-pieces 4 --lr 1e-3 --warmup-iters 20 --max-length 256
        --max-new-tokens 64 --no-eval-gen --log-interval 50 --eval-batch-size 100 --resume)
EVAL=(--no-do-sample --max-new-tokens 64 --eval-batch-size 100)
# Each run is evaluated and saved at its end only (the launchers' default is once per epoch, as the published scripts
# do): the runs are a few epochs long, and the measured table (docs/quickstart.md) was made this way.
AT_END=(EVAL_INTERVAL=0 SAVE_INTERVAL=0)

if [[ "${FRESH:-0}" == "1" ]]; then rm -rf "$QS_DIR" data/synth data/synth_pretrain processed_data/synth \
    processed_data/synth_pretrain checkpoints/tiny-${FAMILY}-*; fi
mkdir -p "$QS_DIR"
TIMES="$QS_DIR/timings.tsv"
touch "$TIMES"

# stage NAME OUTPUT CMD...: runs CMD unless OUTPUT exists; records its wall time.
stage() {
    local name="$1" output="$2"; shift 2
    if [[ -e "$output" ]]; then echo "== $name: $output exists, skipped"; return; fi
    echo "== $name"
    local t0=$SECONDS
    "$@"
    printf '%s\t%s\n' "$name" "$((SECONDS - t0))" >> "$TIMES"
}

# lanes FN1 FN2: two independent chains of stages (shell functions) at once, each on half the cores, output
# prefixed with the function's name. The tiny models use a second thread poorly (one 2-thread run did ~1.3x the work
# of a 1-thread run here), so two 1-thread chains side by side finish ~1.5x sooner than one after the other. Fails if
# either fails.
lanes() {
    local threads=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 )) pids=() fn pid status=0
    for fn in "$1" "$2"; do
        ( export OMP_NUM_THREADS=$threads; "$fn" 2>&1 | sed -u "s/^/[$fn] /" ) &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
    return "$status"
}

# The generator writes the corpus last, so it stands for the whole data step (train/valid are the same bytes when
# an older checkout's data step is re-run for it).
stage data "$CORPUS"  run_python tools/make_synthetic_data.py --out-dir data/synth
stage models checkpoints/tiny-${FAMILY}-student  run_python tools/make_tiny_models.py \
    --corpus data/synth/train.jsonl --families "$FAMILY"
stage process "$DATA/valid_0.idx"  env DATA_DIR=data/synth CKPT=checkpoints/tiny-${FAMILY}-teacher \
    bash scripts/${FAMILY}/tools/process_data_dolly.sh --max-length 256 --max-prompt-length 192
stage process-pretrain "$LM_DATA/train_0.idx"  env CKPT=checkpoints/tiny-${FAMILY}-teacher \
    bash scripts/${FAMILY}/tools/process_data_pretrain.sh --data-path "$CORPUS" --max-length 256
stage sft-teacher "$QS_DIR/sft-teacher/best"  env "${AT_END[@]}" CKPT=checkpoints/tiny-${FAMILY}-teacher \
    DATA_DIR="$DATA" SAVE_PATH="$QS_DIR/sft-teacher" DS_CONFIG="$DS_TEACHER" GPUS_PER_NODE=1 \
    bash scripts/${FAMILY}/sft/sft_xlarge.sh "${COMMON[@]}" --epochs "$TEACHER_EPOCHS"
sft_student() {
    stage sft-student "$QS_DIR/sft-student/best"  env "${AT_END[@]}" CKPT=checkpoints/tiny-${FAMILY}-student \
        DATA_DIR="$DATA" SAVE_PATH="$QS_DIR/sft-student" DS_CONFIG="$DS" GPUS_PER_NODE=1 \
        bash scripts/${FAMILY}/sft/sft_base.sh "${COMMON[@]}" --epochs "$STUDENT_EPOCHS"
}
# Distillation rows: the same student, steps and hyper-parameters as its SFT row, taught by the SFT'd teacher.
KD_ENV=(CKPT=checkpoints/tiny-${FAMILY}-student TEACHER_CKPT="$QS_DIR/sft-teacher/best" DATA_DIR="$DATA" DS_CONFIG="$DS"
        GPUS_PER_NODE=1 "${AT_END[@]}")
kd_fkl() {
    stage kd-fkl "$QS_DIR/kd-fkl/best"  env "${KD_ENV[@]}" SAVE_PATH="$QS_DIR/kd-fkl" \
        bash scripts/${FAMILY}/kd/kd_base.sh "${COMMON[@]}" --epochs "$STUDENT_EPOCHS" --type fkl --kd-ratio 0.5
}
kd_fkl_selective() {
    stage kd-fkl-selective "$QS_DIR/kd-fkl-selective/best"  env "${KD_ENV[@]}" SAVE_PATH="$QS_DIR/kd-fkl-selective" \
        bash scripts/${FAMILY}/kd/kd_base.sh "${COMMON[@]}" --epochs "$STUDENT_EPOCHS" --type fkl --kd-ratio 0.5 \
        --token-ratio 0.5 --token-score student_entropy
}
# SRD ranks examples by how the initial student does on them, which says nothing for a random model (every answer
# scores Rouge-L 0), so these two rows start from the SFT student above (standing in for a pretrained student) and
# distil more: plain tfkl for KD_EPOCHS epochs on all examples, and SRD with the same number of optimizer steps split
# evenly over its 3 stages (25/50/75 % of the data, easy -> hard, tau 1 -> 1.5 -> 2). SRD's time includes its
# reflection. See docs/srd.md. The SRD launcher defaults to the SRD release's recipe; this row keeps the quick start's
# own (SRD_PINNED): the optimisation flags above, one kd-ratio for all stages, cosine to 0, greedy validation at the
# end of each stage only, and a greedy reflection ranked with average ties.
KD_EPOCHS=${KD_EPOCHS:-1}
TRAIN_EXAMPLES=$(wc -l < data/synth/train.jsonl)
SRD_STAGE_ITERS=$(( ( (TRAIN_EXAMPLES + BATCH - 1) / BATCH * KD_EPOCHS + 2 ) / 3 ))
SRD_PINNED=(--kd-ratio 0.5 --lr-min 0 --no-do-sample --eval-interval 0 --save-interval 0 --rank-ties average
            --reflect-temperature 0 --reflect-no-repeat-ngram-size 0)
FROM_SFT_ENV=(CKPT="$QS_DIR/sft-student/best" TEACHER_CKPT="$QS_DIR/sft-teacher/best" DATA_DIR="$DATA" DS_CONFIG="$DS"
              GPUS_PER_NODE=1)
kd_tfkl() {  # its validation Rouge-L is the baseline in SRD's report, so it finishes before SRD starts
    stage kd-tfkl "$QS_DIR/kd-tfkl/best"  env "${FROM_SFT_ENV[@]}" "${AT_END[@]}" SAVE_PATH="$QS_DIR/kd-tfkl" \
        bash scripts/${FAMILY}/kd/kd_base.sh "${COMMON[@]}" --epochs "$KD_EPOCHS" --type tfkl --kd-ratio 0.5 --eval-gen
}
srd_tfkl() {
    stage srd-tfkl "$QS_DIR/srd-tfkl/best"  env "${FROM_SFT_ENV[@]}" SAVE_PATH="$QS_DIR/srd-tfkl" \
        SRD_DIR="$QS_DIR/srd-data" BASELINE_DIR="$QS_DIR/kd-tfkl" \
        bash scripts/${FAMILY}/srd/train_0.1B_1.5B.sh "${COMMON[@]}" --stage-iters "$SRD_STAGE_ITERS" --type tfkl \
        "${SRD_PINNED[@]}" --launcher fork  # one process: reflection and stages fork from a server that imported once
}
# Every model through the evaluation launcher: greedy, Rouge-L and exact match on the 500 validation examples.
evaluate() {
    stage "eval-$1" "$QS_DIR/eval/$1/summary.json"  env CKPT="$QS_DIR/$1/best" SAVE_PATH="$QS_DIR/eval/$1" \
        DATA_ROOT=processed_data EVAL_SETS=synth SEEDS=10 GPUS_PER_NODE=1 \
        bash scripts/${FAMILY}/eval/run_eval.sh "${EVAL[@]}"
}

# After the teacher (everything needs it) two chains run side by side: the SFT student and what starts from it
# (tfkl, then SRD, which compares itself with tfkl), and the distillation rows from the random student; each chain
# evaluates its own models, so the two take about as long.
from_sft_student() { sft_student; kd_tfkl; srd_tfkl; evaluate sft-student; evaluate kd-tfkl; evaluate srd-tfkl; }
from_random_student() { evaluate sft-teacher; kd_fkl; kd_fkl_selective; evaluate kd-fkl; evaluate kd-fkl-selective; }
lanes from_sft_student from_random_student

run_python tools/quickstart_table.py "$QS_DIR"
echo "quick start: $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s wall time, everything included"
