#!/usr/bin/env bash
# MiniLLM as released for OPT (minillm/scripts/opt/minillm/train_1.3B_13B.sh of LMOps, which distils OPT-1.3B and
# OPT-2.7B from OPT-13B; this toolkit's OPT pair is OPT-125M from the SFT'd OPT-2.7B, as scripts/opt/kd/): OPT-125M,
# initialised by SFT selected by validation loss (minillm/init_125M.sh); lr 5e-6, batch 16, gradient accumulation 1,
# 16 prompts per generation chunk, gradient checkpointing, the pretraining term on OpenWebText
# (processed_data/openwebtext/full/opt; the release's is its RoBERTa corpus, LM_DATA_DIR=... to use one;
# LM_DATA_DIR=none: without it). The release's --model-parallel-size 4 is not supported (ZeRO partitions instead).
# Every value is overridable: scripts/common/minillm.sh.
FAMILY=opt; STUDENT=${STUDENT:-opt-125M}; STUDENT_HF=facebook/opt-125m; TEACHER=${TEACHER:-opt-2.7B}; TEACHER_SCRIPT=sft/sft_2.7B.sh; INIT_SCRIPT=minillm/init_125M.sh
BATCH_SIZE=${BATCH_SIZE:-16}; GRAD_ACC=${GRAD_ACC:-1}; CHUNK_SIZE=${CHUNK_SIZE:-16}
EXTRA=(--gradient-checkpointing)
source "$(dirname "${BASH_SOURCE[0]}")/../../common/minillm.sh" "$@"
