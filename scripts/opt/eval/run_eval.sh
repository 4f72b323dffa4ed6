#!/usr/bin/env bash
# Rouge-L evaluation of a opt checkpoint (CKPT=<dir>) on every evaluation set present, over seeds.
FAMILY=opt; MODEL_NAME=${MODEL_NAME:-opt-125M}; SFT_SCRIPT=sft_125M.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../common/eval.sh" "$@"
