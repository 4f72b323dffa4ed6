#!/usr/bin/env bash
# DistiLLM as released (scripts/openllama2/distillm/train_3B_7B_teacher_lora.sh of the DistiLLM code): OpenLLaMA-2 3B,
# a LoRA student continuing its SFT adapter (init/init_3B_lora.sh), from the LoRA-tuned OpenLLaMA-2 7B (base +
# adapter, merged, in the resolved precision); --type adaptive-srkl, the adaptive off-policy schedule with
# --init-threshold 0.2 --loss-eps 0.2 and a replay buffer of 1000 (that launcher says --type srkl-aesop, an older
# name, for which its code, looking for "adaptive" in --type, never generates); lr 5e-4, batch 8, 10 epochs, gradient
# checkpointing, kd-ratio 1.0, the pretraining term on OpenWebText (processed_data/openwebtext/full/llama). Every
# value is overridable: scripts/common/onpolicy.sh.
FAMILY=llama; METHOD=distillm; STUDENT=${STUDENT:-openllama2-3B}; STUDENT_HF=openlm-research/open_llama_3b_v2; TEACHER=${TEACHER:-openllama2-7B}; TEACHER_SCRIPT=sft/sft_7B_lora.sh; INIT_SCRIPT=init/init_3B_lora.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
TEACHER_CKPT=${TEACHER_CKPT:-checkpoints/openllama2-7B}; TEACHER_PEFT=${TEACHER_PEFT:-results/llama/train/sft/openllama2-7B/best}
LORA_STUDENT=1; EXTRA=(--gradient-checkpointing)
INIT_THRESHOLD=${INIT_THRESHOLD:-0.2}; LOSS_EPS=${LOSS_EPS:-0.2}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/onpolicy.sh" "$@"
