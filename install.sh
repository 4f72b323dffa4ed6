#!/usr/bin/env bash
# Installs the toolkit's pinned dependencies into the current Python environment. Idempotent: re-running installs
# nothing new. On a machine without CUDA it installs the CPU build torch==2.13.0 and DeepSpeed without prebuilt ops
# (DeepSpeed builds the one small op it needs on first use); on a CUDA machine it keeps the CUDA torch already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PYTHON=${PYTHON:-python}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

has_cuda_torch=$("$PYTHON" - <<'PY' 2>/dev/null || echo no
import torch
print("yes" if torch.version.cuda else "no")
PY
)
if [[ "$has_cuda_torch" == "yes" ]]; then
    echo "install.sh: keeping the CUDA build of torch already installed ($("$PYTHON" -c 'import torch; print(torch.__version__)'))"
else
    # Pinned: an unpinned torch would pull the newest release with several GB of CUDA packages.
    "$PYTHON" -m pip install --quiet "torch==${TORCH_VERSION}"
fi

# DS_BUILD_OPS=0: no ahead-of-time op builds (they need CUDA); ops are JIT-built when first used.
DS_BUILD_OPS=0 "$PYTHON" -m pip install --quiet -r requirements.txt

"$PYTHON" - <<'PY'
import torch, transformers, deepspeed, peft, tokenizers, rouge_score  # noqa: F401
print(f"install.sh: ok — torch {torch.__version__} (cuda: {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, deepspeed {deepspeed.__version__}, peft {peft.__version__}")
PY
