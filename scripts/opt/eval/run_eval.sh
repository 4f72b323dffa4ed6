#!/usr/bin/env bash
# Rouge-L evaluation of a opt checkpoint (CKPT=<dir>) on every evaluation set present, over seeds.
FAMILY=opt
source "$(dirname "${BASH_SOURCE[0]}")/../../common/eval.sh" "$@"
