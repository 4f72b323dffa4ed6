#!/usr/bin/env bash
# Rouge-L evaluation of a llama checkpoint (CKPT=<dir>) on every evaluation set present, over seeds.
FAMILY=llama
source "$(dirname "${BASH_SOURCE[0]}")/../../common/eval.sh" "$@"
