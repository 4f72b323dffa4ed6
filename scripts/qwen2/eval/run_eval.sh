#!/usr/bin/env bash
# Rouge-L evaluation of a qwen2 checkpoint (CKPT=<dir>) on every evaluation set present, over seeds.
FAMILY=qwen2; MODEL_NAME=${MODEL_NAME:-qwen2-0.5B}; SFT_SCRIPT=sft_0.5B.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../common/eval.sh" "$@"
