"""What the entry points do to their process before the heavy work: no torch before the flags are checked, the CPU
OpenMP wait policy, and no DeepSpeed shared-memory op for a world of one."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

# Entry points whose --help must answer before torch (and transformers, DeepSpeed) load.
TORCH_FREE_HELP = ["train_sft.py", "train_distill.py", "evaluate.py", "tools/generate_data.py",
                   "tools/srd_reflect.py", "tools/srd_run.py"]


@pytest.mark.parametrize("entry", TORCH_FREE_HELP)
def test_help_imports_no_torch(entry: str) -> None:
    code = ("import runpy, sys\n"
            f"sys.argv = [{entry!r}, '--help']\n"
            "try:\n"
            f"    runpy.run_path({entry!r}, run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}).stdout
    assert "usage:" in out and out.strip().splitlines()[-1] == "HEAVY []", out[-500:]


def _policy_after_import(env: dict[str, str]) -> str:
    code = "import os, distill; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True,
                          env=env).stdout.strip()


def test_importing_distill_sets_the_passive_wait_policy_on_cpu_only_unless_chosen() -> None:
    import distill

    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    expected = "PASSIVE" if distill._cpu_only() else "None"
    assert _policy_after_import(base) == expected
    assert _policy_after_import({**base, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"  # the user's choice stays
    assert _policy_after_import({**base, "CUDA_VISIBLE_DEVICES": ""}) == "PASSIVE"  # no visible GPU: CPU only


@pytest.mark.usefixtures("in_process")
def test_a_world_of_one_on_cpu_does_not_build_the_shm_comm_op() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CPU-only check")
    import deepspeed.ops

    from distill import dist

    env = dist.init_distributed()
    assert env.world_size == 1
    assert deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] is False
