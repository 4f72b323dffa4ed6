"""Safe loading on resume: the trainer's RNG files and DeepSpeed's engine/optimizer state are read with
``torch.load(weights_only=True)`` in every ZeRO stage, and a checkpoint file that would run code when unpickled is
refused without running it."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

import train_sft
from tests.conftest import REPO_ROOT, tiny_train_args

pytestmark = pytest.mark.usefixtures("in_process")  # see conftest.in_process_run


def args(student: Path, data: Path, save: Path, ds: str, *extra: str) -> list[str]:
    out = tiny_train_args(student, data, save, "--batch-size", "4", "--dev-num", "8", *extra)
    out[out.index("--deepspeed-config") + 1] = str(REPO_ROOT / "configs" / "deepspeed" / f"{ds}.json")
    return out


@pytest.mark.parametrize("ds", ["ds_config_zero1_fp32", "ds_config_zero3_fp32"])
def test_resume_loads_every_file_weights_only(ds: str, tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                              monkeypatch) -> None:
    student, save = tiny_models["gpt2"]["student"], tmp_path / "run"
    train_sft.main(args(student, processed_tiny, save, ds, "--total-iters", "2"))
    calls: list[tuple[str, object]] = []
    real_load = torch.load

    def recording_load(f, *a, **kw):
        calls.append((str(f), kw.get("weights_only")))
        return real_load(f, *a, **kw)

    monkeypatch.setattr(torch, "load", recording_load)
    train_sft.main(args(student, processed_tiny, save, ds, "--total-iters", "3", "--resume"))
    assert f"resumed from {save / '2'} (step 2)" in (save / "log.txt").read_text()
    loaded = {Path(f).name for f, _ in calls}
    assert "rng_state_0.pt" in loaded and any("optim_states" in n for n in loaded), loaded
    assert all(w is True for _, w in calls), calls


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_pickle_that_runs_code_is_refused(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                            monkeypatch, capsys) -> None:
    student, save = tiny_models["gpt2"]["student"], tmp_path / "run"
    train_sft.main(args(student, processed_tiny, save, "ds_config_zero0_fp32", "--total-iters", "2"))
    with open(save / "2" / "rng_state_0.pt", "wb") as f:
        pickle.dump({"python": _RunsCode()}, f)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        train_sft.main(args(student, processed_tiny, save, "ds_config_zero0_fp32", "--total-iters", "3",
                            "--resume"))
    assert e.value.code == 2 and not (tmp_path / "PWNED").exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {save / '2'}: a state file holds more than tensors and plain values and is not "
                          f"loaded (Weights only load failed")
    assert err.endswith(f"delete {save / '2'} to resume from the checkpoint before it")
