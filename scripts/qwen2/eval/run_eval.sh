#!/usr/bin/env bash
# Rouge-L evaluation of a qwen2 checkpoint (CKPT=<dir>) on every evaluation set present, over seeds.
FAMILY=qwen2
source "$(dirname "${BASH_SOURCE[0]}")/../../common/eval.sh" "$@"
