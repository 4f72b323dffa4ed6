"""Errors early and readable, warnings where settings would be ignored (distill/preflight.py, distill/launch.py).

* A bad input that needs no model to find — an invalid DeepSpeed JSON, one with an optimizer or scheduler section, a
  truncated ``.bin``, an unwritable ``--save`` — stops the run with one ``error: ...`` line naming the file or flag
  and exit status 2, no traceback, *before any model loads*: the tests replace ``distill.models.load_model`` (and
  ``load_tokenizer``) with a function that fails the test.
* A DeepSpeed setting the flags override with another value is one warning line naming both; agreement, "auto" and
  absence are silent. Warnings come once, before the models load, and are in the run's log.txt.
* Under torchrun (scripts/lib.sh, 2 processes) a rank's exit status 2 is the launcher's, without its traceback.
* Each tool a user runs answers a bad input with one line and exit status 2.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
from pathlib import Path
from typing import Any, Callable

import pytest

from distill import preflight
from distill.config import ConfigError, InputError, TrainConfig
from distill.launch import failure_line
from tests.conftest import REPO_ROOT, tiny_train_args

FP32 = REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp32.json"


class ModelLoadReached(Exception):
    """Raised by the stand-in model loader: the run got past every check."""


@pytest.fixture()
def no_model_load(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Replaces the model and tokenizer loaders: a check that comes after them fails the test; a run that passes
    every check raises ModelLoadReached, with the stderr printed until then in ``seen["err"]``."""
    from distill import models

    seen: dict[str, Any] = {}

    def reached(*args: Any, **kwargs: Any) -> None:
        seen["err"] = capsys.readouterr().err
        raise ModelLoadReached()

    monkeypatch.setattr(models, "load_model", reached)
    monkeypatch.setattr(models, "load_tokenizer", reached)
    return seen


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def one_error(err: str) -> str:
    """The single ``error:`` line of ``err`` (and no traceback)."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def stops(main: Callable[[list[str]], Any], argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return one_error(capsys.readouterr().err)


# ------------------------------------------------------------------------------------------------------------------
# train_sft.py / train_distill.py: refused before any model loads


@pytest.mark.parametrize("case", ["invalid json", "optimizer", "optimizer and scheduler", "zero stage",
                                  "truncated bin", "valid jsonl short", "save under a file", "save is a file"])
def test_bad_inputs_stop_before_the_models_load(case: str, tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                no_model_load: dict, capsys: pytest.CaptureFixture[str]) -> None:
    import train_sft

    data, save, ds = processed_tiny, tmp_path / "run", FP32
    if case == "invalid json":
        ds = write(tmp_path / "x.json", '{\n  "zero_optimization": {"stage": 0},\n  "gradient_clipping": 1.0,\n}\n')
        expect = [f"--deepspeed-config {ds}: not valid JSON at line 4, column 1", "configs/deepspeed"]
    elif case == "optimizer":
        ds = write(tmp_path / "x.json", json.dumps({"optimizer": {"type": "Adam", "params": {"lr": 0.1}}}))
        expect = [f"--deepspeed-config {ds}", '"optimizer" section would be ignored', "--lr, --weight-decay"]
    elif case == "optimizer and scheduler":
        ds = write(tmp_path / "x.json", json.dumps({"optimizer": {"type": "Adam"}, "scheduler": {"type": "WarmupLR"}}))
        expect = ['"optimizer" and "scheduler" sections', "--adam-beta1", "--lr-schedule, --warmup-iters"]
    elif case == "zero stage":
        ds = write(tmp_path / "x.json", json.dumps({"zero_optimization": {"stage": 4}}))
        expect = ['"zero_optimization.stage" is 4', "0, 1, 2 or 3"]
    elif case == "truncated bin":
        data = copy_data(processed_tiny, tmp_path / "data")
        with open(data / "train_0.bin", "r+b") as f:
            f.truncate((data / "train_0.bin").stat().st_size - 6)
        expect = [str(data / "train_0.bin"), "truncated or mismatched", "process_data_dolly.py"]
    elif case == "valid jsonl short":
        data = copy_data(processed_tiny, tmp_path / "data")
        lines = (data / "valid.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
        write(data / "valid.jsonl", "".join(lines[:-3]))
        expect = ["--data-dir", str(data / "valid.jsonl"), f"has {len(lines) - 3} records", "processing tool"]
    elif case == "save under a file":  # fails for root too, unlike a read-only directory
        save = write(tmp_path / "file", "x") / "sub"
        expect = [f"--save {save}"]
    else:
        save = write(tmp_path / "file", "x")
        expect = [f"--save {save}", "is a file"]
    argv = tiny_train_args(tiny_models["gpt2"]["student"], data, save, "--total-iters", "1")
    argv[argv.index("--deepspeed-config") + 1] = str(ds)
    line = stops(train_sft.main, argv, capsys)
    for text in expect:
        assert text in line, (text, line)
    if case != "save is a file" and case != "save under a file":
        assert not save.exists()  # nothing written either


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory anyway")
def test_read_only_save_directory(tiny_models: dict, processed_tiny: Path, tmp_path: Path, no_model_load: dict,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    import train_sft

    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        line = stops(train_sft.main, tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, parent / "run",
                                                     "--total-iters", "1"), capsys)
    finally:
        parent.chmod(stat.S_IRWXU)
    assert f"--save {parent / 'run'}" in line


def test_ds_overrides_and_no_effect_flags_warn_once_before_the_models_load(
        tiny_models: dict, processed_tiny: Path, tmp_path: Path, no_model_load: dict) -> None:
    import train_distill

    ds = write(tmp_path / "ds.json", json.dumps({"zero_optimization": {"stage": 0}, "gradient_accumulation_steps": 4,
                                                 "train_micro_batch_size_per_gpu": 16, "train_batch_size": 64,
                                                 "gradient_clipping": 0.5}))
    argv = tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, tmp_path / "run", "--total-iters", "1",
                           "--teacher-model-path", str(tiny_models["gpt2"]["teacher"]), "--type", "fkl",
                           "--temperature-kld", "2", "--jsd-beta", "0.5", "--batch-size", "2")
    argv[argv.index("--deepspeed-config") + 1] = str(ds)
    with pytest.raises(ModelLoadReached):
        train_distill.main(argv)
    warnings = [line for line in no_model_load["err"].splitlines() if line.startswith("warning:")]
    assert warnings == [
        f"warning: {ds} sets train_micro_batch_size_per_gpu 16; --batch-size 2 wins",
        f"warning: {ds} sets gradient_accumulation_steps 4; --gradient-accumulation-steps 1 wins",
        f"warning: {ds} sets train_batch_size 64; --batch-size 2 x --gradient-accumulation-steps 1 x 1 process "
        f"= 2 wins",
        f"warning: {ds} sets gradient_clipping 0.5; --clip-grad 1 wins",
        "warning: --temperature-kld 2 has no effect: --type fkl has no temperature; its temperature twin is "
        "--type tfkl",
        "warning: --jsd-beta 0.5 has no effect: only jsd and tjsd use it, not --type fkl",
    ], no_model_load["err"]


def test_warnings_reach_the_run_log_once(tiny_models: dict, processed_tiny: Path, tmp_path: Path, in_process: None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A real one-step run: each warning once on stderr, and in log.txt."""
    import train_sft

    ds = write(tmp_path / "ds.json", json.dumps({**json.loads(FP32.read_text()), "gradient_accumulation_steps": 2}))
    save = tmp_path / "run"
    argv = tiny_train_args(tiny_models["gpt2"]["student"], processed_tiny, save, "--total-iters", "1",
                           "--batch-size", "2", "--dev-num", "2", "--eval-batch-size", "2", "--num-workers", "2")
    argv[argv.index("--deepspeed-config") + 1] = str(ds)
    train_sft.main(argv)
    assert (save / "1" / "trainer_state.json").is_file()  # the run went through
    expected = [f"warning: {ds} sets gradient_accumulation_steps 2; --gradient-accumulation-steps 1 wins",
                "warning: --num-workers 2 has no effect: batches are read from memory-mapped files in the training "
                "process itself"]
    captured = capsys.readouterr()
    for line in expected:
        assert captured.err.count(line) == 1 and line not in captured.out, captured.err
        assert sum(row.endswith("] " + line) for row in (save / "log.txt").read_text().splitlines()) == 1


# ------------------------------------------------------------------------------------------------------------------
# the DeepSpeed JSON, unit by unit


def test_ds_settings_that_agree_or_are_auto_or_absent_are_silent(tmp_path: Path) -> None:
    train = TrainConfig(save="s", total_iters=1, batch_size=4, gradient_accumulation_steps=2, clip_grad=1.0)
    agree = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2, "train_batch_size": 16,
             "gradient_clipping": 1}
    assert preflight.ds_config_warnings(agree, "ds.json", train, world_size=2) == []
    auto = dict.fromkeys(agree, "auto")
    assert preflight.ds_config_warnings(auto, "ds.json", train, world_size=2) == []
    assert preflight.ds_config_warnings({"zero_optimization": {"stage": 1}}, "ds.json", train, world_size=2) == []
    # The global batch counts every process: right for 2, wrong for 1.
    assert preflight.ds_config_warnings(agree, "ds.json", train, world_size=1) == [
        "warning: ds.json sets train_batch_size 16; --batch-size 4 x --gradient-accumulation-steps 2 x 1 process "
        "= 8 wins"]
    # What the engine gets: the flags' values (accumulation counted in --length-pieces pieces).
    cfg = preflight.apply_flags({**agree, "gradient_accumulation_steps": 7}, TrainConfig(
        save="s", total_iters=1, batch_size=4, gradient_accumulation_steps=2, length_pieces=3, clip_grad=0.0))
    assert "train_batch_size" not in cfg
    assert (cfg["train_micro_batch_size_per_gpu"], cfg["gradient_accumulation_steps"], cfg["gradient_clipping"]) == \
        (4, 6, 0.0)
    for path in sorted((REPO_ROOT / "configs" / "deepspeed").glob("*.json")):  # the shipped configs pass silently
        shipped = preflight.read_ds_config(str(path))
        assert preflight.ds_config_warnings(shipped, str(path), TrainConfig(save="s", total_iters=1), 1) == []


@pytest.mark.parametrize("text, expect", [
    ("[1, 2]", "holds a JSON list, not an object"),
    ('{"fp16": {"enabled": true}, "bf16": {"enabled": true}}', "enables both fp16 and bf16"),
    ('{"zero_optimization": 3}', '"zero_optimization" must be an object'),
    ('{"scheduler": {"type": "WarmupLR"}}', '"scheduler" section would be ignored — the learning-rate schedule'),
    ('{"a": 1 "b": 2}', "not valid JSON at line 1, column 9 (Expecting ',' delimiter)"),
])
def test_read_ds_config_refusals(text: str, expect: str, tmp_path: Path) -> None:
    path = write(tmp_path / "ds.json", text)
    with pytest.raises(ConfigError) as e:
        preflight.read_ds_config(str(path))
    assert str(e.value).startswith(f"--deepspeed-config {path}: ") and expect in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_writable_dir_probe(tmp_path: Path) -> None:
    made = preflight.check_writable_dir(str(tmp_path / "a" / "b"), "--save", keep=False)
    assert made == tmp_path / "a" / "b" and not (tmp_path / "a").exists()  # probed, and left as it was
    assert preflight.check_writable_dir(str(tmp_path / "a" / "b")).is_dir()
    assert list((tmp_path / "a" / "b").iterdir()) == []  # the probe file is gone
    write(tmp_path / "f", "x")
    with pytest.raises(InputError, match=f"^--out {tmp_path / 'f' / 'x'}: {tmp_path / 'f'} is a file"):
        preflight.check_writable_dir(str(tmp_path / "f" / "x"), "--out")


# ------------------------------------------------------------------------------------------------------------------
# the launcher: a rank's exit status, one line, no traceback


def test_failure_line_and_code() -> None:
    assert failure_line(1, 2) == ("error: rank 1 exited with code 2; its message is above", 2)
    line, code = failure_line(0, -signal.SIGKILL)
    assert (line, code) == ("error: rank 0 was killed by SIGKILL (out of memory?)", 128 + signal.SIGKILL)


def test_torchrun_launch_passes_exit_code_2_through(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                    subprocess_env: dict[str, str]) -> None:
    """scripts/lib.sh with GPUS_PER_NODE=2: both ranks refuse the bad DeepSpeed JSON; the launcher exits 2 with one
    line of its own, and no traceback anywhere."""
    import subprocess

    bad = write(tmp_path / "bad.json", '{"zero_optimization": {"stage": 0},}')
    env = {**subprocess_env, "GPUS_PER_NODE": "2", "CKPT": str(tiny_models["gpt2"]["student"]),
           "DATA_DIR": str(processed_tiny), "SAVE_PATH": str(tmp_path / "run"), "DS_CONFIG": str(bad)}
    proc = subprocess.run(["bash", "scripts/gpt2/sft/sft_base.sh", "--total-iters", "1"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "ChildFailedError" not in proc.stderr, proc.stderr
    assert "+ python -m distill.launch --nnodes 1" in proc.stderr.replace(env.get("PYTHON", "python"), "python")
    lines = [line for line in proc.stderr.splitlines() if not line.startswith("+ ")]
    message = f"error: --deepspeed-config {bad}: not valid JSON at line 1, column 36 (Expecting property name"
    # One whole line per rank that got to say it (each written at once, so they cannot interleave; torchrun stops
    # the other rank once one has failed, which on a loaded machine can come first), then the launcher's one line.
    assert 2 <= len(lines) <= 3 and all(line.startswith(message) and line.endswith("configs/deepspeed/")
                                        for line in lines[:-1]), proc.stderr
    assert lines[-1].startswith("error: rank ") and lines[-1].endswith("exited with code 2; its message is above")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------------------
# the tools users run: one line, exit status 2


def _seqkd_main(argv: list[str]) -> Any:
    from tools import generate_data

    return generate_data.main(argv)


def _srd_run_main(argv: list[str]) -> Any:
    from tools import srd_run

    return srd_run.main(argv)


def _merge_main(argv: list[str]) -> Any:
    from tools import merge_lora

    return merge_lora.main(argv)


def _divergence_main(argv: list[str]) -> Any:
    from tools import eval_divergence

    return eval_divergence.main(argv)


def _reflect_main(argv: list[str]) -> Any:
    from distill.srd import reflect_main  # tools/srd_reflect.py's main

    return reflect_main(argv)


def _evaluate_main(argv: list[str]) -> Any:
    from distill.evaluation import main

    return main(argv)


@pytest.mark.parametrize("tool", ["evaluate", "generate_data", "srd_reflect", "srd_run", "merge_lora",
                                  "eval_divergence", "eval_divergence data"])
def test_tools_refuse_bad_input_in_one_line(tool: str, tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                            no_model_load: dict, capsys: pytest.CaptureFixture[str]) -> None:
    student, teacher = str(tiny_models["gpt2"]["student"]), str(tiny_models["gpt2"]["teacher"])
    blocked = str(write(tmp_path / "file", "x") / "out")  # a directory that cannot be made, for root too
    bad_ds = write(tmp_path / "ds.json", '{"optimizer": {"type": "Adam"}}')
    main: Callable[[list[str]], Any]
    expect: list[str]
    if tool == "evaluate":
        main, argv = _evaluate_main, ["--model-path", student, "--data-dir", str(processed_tiny), "--save", blocked]
        expect = [f"--save {blocked}", "is a file"]
    elif tool == "generate_data":
        main, argv = _seqkd_main, ["--model-path", teacher, "--data-dir", str(processed_tiny), "--save", blocked]
        expect = [f"--save {blocked}"]
    elif tool == "srd_reflect":
        main, argv = _reflect_main, ["--model-path", student, "--data-dir", str(processed_tiny), "--srd-dir", blocked]
        expect = [f"--srd-dir {blocked}"]
    elif tool == "srd_run":
        main = _srd_run_main
        argv = ["--num-stages", "2", "--model-path", student, "--teacher-model-path", teacher, "--data-dir",
                str(processed_tiny), "--save", str(tmp_path / "srd"), "--type", "tfkl", "--epochs", "1",
                "--deepspeed-config", str(bad_ds)]
        expect = [f"--deepspeed-config {bad_ds}", '"optimizer" section']
    elif tool == "merge_lora":
        adapter = tmp_path / "adapter"
        adapter.mkdir()
        write(adapter / "adapter_config.json", json.dumps({"r": 8}))
        main, argv = _merge_main, [str(adapter), str(tmp_path / "merged")]
        expect = ["no readable base_model_name_or_path", "--base"]
    elif tool == "eval_divergence":
        main, argv = _divergence_main, ["--student", str(tmp_path / "nope"), "--teacher", teacher, "--data-dir",
                                        str(processed_tiny)]
        expect = ["--student", str(tmp_path / "nope")]
    else:
        data = copy_data(processed_tiny, tmp_path / "data")
        write(data / "valid_0.idx", "garbage")
        main, argv = _divergence_main, ["--student", student, "--teacher", teacher, "--data-dir", str(data)]
        expect = [str(data / "valid_0.idx")]
    line = stops(main, argv, capsys)
    for text in expect:
        assert text in line, (text, line)
    assert not (tmp_path / "srd").exists()


def test_srd_run_passes_a_steps_input_error_code_through(tiny_models: dict, processed_tiny: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A step that exits 2 (its bad input, said in its own line) makes the runner exit 2, not 1."""
    from distill import srd_runner as srd_run

    monkeypatch.setattr(srd_run, "make_launcher", lambda cfg: (lambda entry, argv: 2))
    argv = ["--num-stages", "2", "--srd-dir", str(tmp_path / "srd"), "--model-path",
            str(tiny_models["gpt2"]["student"]), "--teacher-model-path", str(tiny_models["gpt2"]["teacher"]),
            "--data-dir", str(processed_tiny), "--save", str(tmp_path / "run"), "--type", "tfkl", "--epochs", "1",
            "--report-to", "none"]
    line = stops(srd_run.main, argv, capsys)
    assert line.startswith("error: reflection failed (exit code 2)"), line
