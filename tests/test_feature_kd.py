"""The selective feature term in the engine (distill/feature_kd.py): on KD and on MiniLLM, its projector a trainable
module of the objective, its selection kept in the checkpoint (--selection-refresh 0 reuses it on resume), and the
one-line refusals of its flags."""
from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO_ROOT, max_abs_diff, read_metrics, tiny_train_args, weights
from tests.test_scripts import recorder  # noqa: F401 (a fixture)


def kd_args(tiny_models: dict, data: Path, save: Path, *extra: str) -> list[str]:
    return tiny_train_args(tiny_models["gpt2"]["student"], data, save, "--teacher-model-path",
                           str(tiny_models["gpt2"]["teacher"]), "--kd-ratio", "0.5", "--batch-size", "4",
                           "--gen-max-new-tokens", "8", *extra)


def test_the_feature_term_trains_a_projector_and_reuses_a_once_made_selection_on_resume(
        tiny_models: dict, processed_tiny: Path, tmp_path: Path, in_process) -> None:
    """KD + the feature term under integrated gradients on the teacher's sampled answers, residual and MLP units of
    two layer pairs, fewer kept residual units than the student's width (a projector); selected once
    (--selection-refresh 0): killed after step 2, the resumed run keeps that selection and ends with the weights and
    projectors of an uninterrupted run."""
    import train_distill
    from safetensors.torch import load_file

    from distill.trainer import EXTRAS_FILE

    common = ("--total-iters", "4", "--save-interval", "2", "--keep-optimizer-states", "2", "--method",
              "integrated_grads", "--hidden", "--mlp", "--student-layer-indices", "[-1,1]",
              "--teacher-layer-indices", "[-1,-2]", "--student-hidd-size", "32", "--alpha-corr", "0.05",
              "--alpha-cos", "1", "--selection-refresh", "0", "--ig-steps", "4")
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    train_distill.main(kd_args(tiny_models, processed_tiny, run_a, *common))
    shutil.copytree(run_a / "2", run_b / "2")
    train_distill.main(kd_args(tiny_models, processed_tiny, run_b, *common, "--resume"))
    rows = [m for m in read_metrics(run_a) if "train/feat" in m]
    assert len(rows) == 4 and all(math.isfinite(m["train/feat"]) and m["train/feat"] > 0 for m in rows)
    assert rows[0]["train/attribution_seconds"] > 0 and all(m["train/attribution_seconds"] == 0 for m in rows[1:])
    state = {r: torch.load(r / "4" / "rng_state_0.pt", weights_only=True)["objective"] for r in (run_a, run_b)}
    sel_a, sel_b = state[run_a]["selection"], state[run_b]["selection"]
    assert set(sel_a) == {"hidden:-1", "hidden:-2", "mlp:-1", "mlp:-2"} and state[run_b]["selected_at"] == 0
    assert all(torch.equal(sel_a[k], sel_b[k]) for k in sel_a)
    assert len(sel_a["hidden:-1"]) == 32  # --student-hidd-size units kept
    projectors = load_file(str(run_a / "4" / EXTRAS_FILE))
    assert any("hidden" in k for k in projectors)  # the student's 64 residual units -> 32 kept teacher units
    assert max_abs_diff(weights(run_a / "4"), weights(run_b / "4")) == 0.0
    assert max_abs_diff(projectors, load_file(str(run_b / "4" / EXTRAS_FILE))) == 0.0


def test_the_feature_term_adds_to_minillm(tiny_models: dict, processed_tiny: Path, tmp_path: Path, in_process) -> None:
    import train_minillm

    save = tmp_path / "run"
    train_minillm.main(tiny_train_args(
        tiny_models["gpt2"]["student"], processed_tiny, save, "--teacher-model-path",
        str(tiny_models["gpt2"]["teacher"]), "--batch-size", "4", "--num-rollouts", "8", "--max-new-tokens", "8",
        "--warmup-iters", "0", "--no-eval-gen", "--total-iters", "3", "--method", "grad", "--hidden",
        "--student-layer-indices", "[-1]", "--teacher-layer-indices", "[-1]", "--alpha-corr", "0.05",
        "--attribution-on", "data"))
    rows = [m for m in read_metrics(save) if "train/pg" in m]
    assert len(rows) == 3 and all(math.isfinite(m["train/feat"]) for m in rows)
    # refreshed every step (the default, as the original): each step logs its overlap with the previous selection
    assert all("train/selection_overlap" in m for m in rows[1:])


@pytest.mark.parametrize("flags,needle", [
    (["--method", "grad", "--alpha-corr", "0.05"], "--method: aligns nothing"),
    (["--method", "grad", "--hidden"], "weight 0"),
    (["--method", "grad", "--hidden", "--alpha-cos", "1", "--student-layer-indices", "[-1,-2]"], "pair them"),
    (["--method", "grad", "--hidden", "--alpha-cos", "1", "--teacher-layer-indices", "[a]"], "[-1,-2,-3]"),
])
def test_bad_feature_flags_are_one_line(flags: list, needle: str, tiny_models: dict, processed_tiny: Path,
                                        tmp_path: Path) -> None:
    args = ["--model-path", str(tiny_models["gpt2"]["student"]), "--data-dir", str(processed_tiny), "--save",
            str(tmp_path / "run"), "--teacher-model-path", str(tiny_models["gpt2"]["teacher"]), "--total-iters", "1",
            "--max-length", "128", *flags]
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "train_distill.py"), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]


def test_the_feature_kd_launcher_passes_the_release_flags(recorder, tiny_models: dict, processed_tiny: Path,
                                                          tmp_path: Path) -> None:
    from distill.config import (DataConfig, DistillConfig, FeatureConfig, GenerationConfig, ModelConfig,
                                TrainConfig, parse_configs)
    from tests.test_scripts import run_script

    env, argv_file = recorder
    env = {**env, "CKPT": str(tiny_models["gpt2"]["student"]), "TEACHER_CKPT": str(tiny_models["gpt2"]["teacher"]),
           "DATA_DIR": str(processed_tiny), "SAVE_PATH": str(tmp_path / "save")}
    proc = run_script("scripts/gpt2/kd/kd_feature_base.sh", env, "--method", "integrated_grads", "--mlp")
    assert proc.returncode == 0, proc.stderr
    argv = argv_file.read_text().split("\0")[:-1]
    args = argv[argv.index("train_distill.py") + 1:]
    *_, feat = parse_configs([ModelConfig, DataConfig, TrainConfig, GenerationConfig, DistillConfig, FeatureConfig],
                             args)
    assert (feat.method, feat.hidden, feat.mlp, feat.alpha_corr) == ("integrated_grads", True, True, 0.05)
    assert feat.student_layers == feat.teacher_layers == (-1, -2, -3)
    assert (feat.student_hidd_size, feat.student_mlp_size) == (768, 3072)
