#!/usr/bin/env bash
# Rouge-L evaluation of a llama checkpoint (CKPT=<dir>) on every evaluation set present, over seeds.
FAMILY=llama; MODEL_NAME=${MODEL_NAME:-openllama2-3B}; SFT_SCRIPT=sft_3B.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../common/eval.sh" "$@"
