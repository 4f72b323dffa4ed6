"""Knowledge distillation of large language models: the library behind train_sft.py, train_distill.py and evaluate.py."""
import os as _os

#: This process's parent when it started (as good as: this package is imported first): distill/dist.py compares it
#: with the parent it has when it asks the kernel to signal it on the parent's death, to notice a launcher that
#: died in between.
PARENT_AT_START = _os.getppid()
#: The variable naming the launcher's PID for what it starts (scripts/lib.sh, tools/srd_run.py; read by
#: distill/dist.py die_with_launcher). Here, not in distill/dist.py, so the SRD runner's --help imports no torch.
LAUNCHER_ENV = "DISTILL_LAUNCHER_PID"


def _cpu_only() -> bool:
    """No GPU on this machine, judged without importing torch (by the devices its drivers create)."""
    if _os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return True
    return not any(_os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg"))


# On CPU, OpenMP threads that spin while they wait make a run on a shared or oversubscribed machine several times
# slower (the chunked KD loss's forward+backward: 4.0 s instead of 0.49 s with the other core busy); sleeping
# threads cost nothing measurable on an idle one. Set before torch loads its OpenMP runtime, and only when the user
# has not chosen a policy; importing this package first (every entry point and tool does) is enough.
if "OMP_WAIT_POLICY" not in _os.environ and "torch" not in __import__("sys").modules and _cpu_only():
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
