#!/usr/bin/env bash
# Rouge-L evaluation of a gpt2 checkpoint (CKPT=<dir>) on every evaluation set present, over seeds.
FAMILY=gpt2; MODEL_NAME=${MODEL_NAME:-gpt2-base}; SFT_SCRIPT=sft_base.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../common/eval.sh" "$@"
