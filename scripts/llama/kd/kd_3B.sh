#!/usr/bin/env bash
# KD of OpenLLaMA-2 3B from the LoRA-tuned OpenLLaMA-2 7B (base + adapter) (--type fkl|rkl|jsd|tvd|sfkl|srkl|tfkl|..., default fkl).
FAMILY=llama; STUDENT=${STUDENT:-openllama2-3B}; STUDENT_HF=openlm-research/open_llama_3b_v2; TEACHER=${TEACHER:-openllama2-7B}; TEACHER_SCRIPT=sft/sft_7B_lora.sh
LR=${LR:-2e-5}; BATCH_SIZE=${BATCH_SIZE:-4}; GRAD_ACC=${GRAD_ACC:-2}; EPOCHS=${EPOCHS:-10}
ZERO_STAGE=${ZERO_STAGE:-2}
TEACHER_CKPT=${TEACHER_CKPT:-checkpoints/openllama2-7B}
TEACHER_PEFT=${TEACHER_PEFT:-results/llama/train/sft/openllama2-7B/best}
source "$(dirname "${BASH_SOURCE[0]}")/../../common/kd.sh" "$@"
