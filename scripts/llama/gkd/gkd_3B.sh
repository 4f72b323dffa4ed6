#!/usr/bin/env bash
# GKD as released (scripts/openllama2/gkd/gkd_3B_7B_teacher_lora.sh of the DistiLLM code): OpenLLaMA-2 3B, a LoRA
# student continuing its SFT adapter (init/init_3B_lora.sh), from the LoRA-tuned OpenLLaMA-2 7B (base + adapter,
# merged, in the resolved precision); --type mixed-jsd, the student's own answers in half the micro-batches
# (--mixed-alpha 0.5) (the release's --type jsd-mixed, the same in its code); lr 5e-4, batch 8, 10 epochs, gradient
# checkpointing, kd-ratio 1.0, the pretraining term on OpenWebText (processed_data/openwebtext/full/llama). Every
# value is overridable: scripts/common/onpolicy.sh.
FAMILY=llama; METHOD=gkd; STUDENT=${STUDENT:-openllama2-3B}; STUDENT_HF=openlm-research/open_llama_3b_v2; TEACHER=${TEACHER:-openllama2-7B}; TEACHER_SCRIPT=sft/sft_7B_lora.sh; INIT_SCRIPT=init/init_3B_lora.sh
LR=${LR:-5e-4}; BATCH_SIZE=${BATCH_SIZE:-8}; GRAD_ACC=${GRAD_ACC:-1}; EPOCHS=${EPOCHS:-10}
TEACHER_CKPT=${TEACHER_CKPT:-checkpoints/openllama2-7B}; TEACHER_PEFT=${TEACHER_PEFT:-results/llama/train/sft/openllama2-7B/best}
LORA_STUDENT=1; EXTRA=(--gradient-checkpointing)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/onpolicy.sh" "$@"
