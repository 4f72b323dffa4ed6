"""Launch scripts: scripts/<family>/sft/*.sh and scripts/<family>/eval/run_eval.sh.

Every SFT script is checked cheaply with a stand-in ``PYTHON`` that records its command line (which is then parsed by
the real argument parser): the script's defaults reach the command, environment overrides and pass-through flags win,
and a missing checkpoint or data directory stops it at once with the path and the command that makes it; the launch
forms (one process: the entry point itself; torchrun on one or several nodes; DeepSpeed's launcher with a hostfile) are
checked the same way. One script per family then runs one real training step (1 CPU process), and the evaluation
script one real evaluation.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from distill.config import DataConfig, GenerationConfig, ModelConfig, TrainConfig, parse_configs
from tests.conftest import REPO_ROOT, read_metrics

SFT_SCRIPTS = sorted(p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("scripts/*/sft/*.sh"))
EVAL_SCRIPTS = sorted(p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("scripts/*/eval/run_eval.sh"))
ONE_PER_FAMILY = ["scripts/gpt2/sft/sft_base.sh", "scripts/opt/sft/sft_125M.sh", "scripts/llama/sft/sft_7B_lora.sh",
                  "scripts/qwen2/sft/sft_0.5B.sh"]
FP32 = str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp32.json")
TINY_FLAGS = ["--total-iters", "1", "--batch-size", "2", "--max-new-tokens", "8", "--dev-num", "4",
              "--eval-batch-size", "4"]


def family_of(script: str) -> str:
    return script.split("/")[1]


def script_default(script: str, var: str) -> str | None:
    """The ``VAR=${VAR:-default}`` default a family script sets, if any."""
    m = re.search(rf"\b{var}=\$\{{{var}:-([^}}]+)\}}", (REPO_ROOT / script).read_text())
    return m.group(1) if m else None


def run_script(script: str, env: dict[str, str], *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", script, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture()
def recorder(tmp_path: Path, subprocess_env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """(env, argv file): ``PYTHON`` is a stub that writes its arguments, NUL-separated, instead of running.

    The launcher's helper queries get the answers of a machine without GPUs: ``python -c CODE`` "0", and the
    hardware probe (``-m distill.hardware --shell``) no GPU and the precision ``STUB_PRECISION`` (default fp32), as
    the real probe says it on a CPU without native bf16."""
    stub, argv_file = tmp_path / "python-stub", tmp_path / "argv"
    stub.write_text('#!/usr/bin/env bash\nif [[ "$1" == "-c" ]]; then echo 0; exit 0; fi\n'
                    'if [[ "$1 $2" == "-m distill.hardware" ]]; then\n'
                    '  echo "NUM_GPUS=0; PRECISION_RESOLVED=${STUB_PRECISION:-fp32}; PRECISION_INFO=stub"; exit 0\n'
                    'fi\n'
                    'printf "%s\\0" "$@" > "$ARGV_FILE"\n')
    stub.chmod(0o755)
    env = {k: v for k, v in subprocess_env.items() if k != "DISTILL_HW_FOR"}  # the stub answers the probe
    env.update(PYTHON=str(stub), ARGV_FILE=str(argv_file), GPUS_PER_NODE="1", MASTER_PORT="29999")
    return env, argv_file


def recorded_train_configs(argv_file: Path) -> tuple[list[str], list]:
    """(the launcher's arguments before train_sft.py — none when it runs directly, the parsed training flags)."""
    argv = argv_file.read_text().split("\0")[:-1]
    launcher, args = argv[:argv.index("train_sft.py")], argv[argv.index("train_sft.py") + 1:]
    return launcher, parse_configs([ModelConfig, DataConfig, TrainConfig, GenerationConfig], args)


def test_every_family_has_sft_and_eval_scripts() -> None:
    assert {family_of(s) for s in SFT_SCRIPTS} == {"gpt2", "opt", "llama", "qwen2"}
    assert len(SFT_SCRIPTS) >= 15 and {family_of(s) for s in EVAL_SCRIPTS} == {"gpt2", "opt", "llama", "qwen2"}
    assert {family_of(s) for s in ONE_PER_FAMILY} == {"gpt2", "opt", "llama", "qwen2"}


@pytest.mark.parametrize("script", SFT_SCRIPTS)
def test_sft_script_command_line(script: str, recorder, tiny_models: dict, processed_tiny_root: Path,
                                 tmp_path: Path) -> None:
    env, argv_file = recorder
    family = family_of(script)
    ckpt, data = tiny_models[family]["student"], processed_tiny_root / "synth" / "full" / family
    env.update(CKPT=str(ckpt), DATA_DIR=str(data), SAVE_PATH=str(tmp_path / "save"))

    # The script's own defaults reach the command line.
    proc = run_script(script, env)
    assert proc.returncode == 0, proc.stderr
    launcher, (model, data_cfg, train, gen) = recorded_train_configs(argv_file)
    assert launcher == []  # one node, one process: `$PYTHON train_sft.py ...`, no torchrun
    assert f"+ {env['PYTHON']} train_sft.py --model-path" in proc.stderr  # the command is echoed
    assert (model.model_path, data_cfg.data_dir, train.save) == (str(ckpt), str(data), str(tmp_path / "save"))
    assert train.lr == float(script_default(script, "LR"))
    assert train.batch_size == int(script_default(script, "BATCH_SIZE"))
    assert train.gradient_accumulation_steps == int(script_default(script, "GRAD_ACC"))
    assert train.epochs == int(script_default(script, "EPOCHS")) and train.total_iters is None
    assert train.eval_gen is True
    # The DeepSpeed config follows the resolved precision: fp32 on a CPU without native bf16 ...
    stage = script_default(script, "ZERO_STAGE") or "1"
    assert Path(train.deepspeed_config) == REPO_ROOT / "configs" / "deepspeed" / f"ds_config_zero{stage}_fp32.json"
    assert model.peft == ("lora" if "lora" in script else None)
    # ... and bf16 where it is native.
    proc = run_script(script, {**env, "STUB_PRECISION": "bf16"})
    assert proc.returncode == 0, proc.stderr
    _, (_, _, train, _) = recorded_train_configs(argv_file)
    assert Path(train.deepspeed_config) == REPO_ROOT / "configs" / "deepspeed" / f"ds_config_zero{stage}_bf16.json"

    # Environment overrides replace the defaults; flags given to the script win over everything.
    env.update(LR="0.5", DS_CONFIG=FP32)
    proc = run_script(script, env, "--total-iters", "1", "--batch-size", "2", "--max-new-tokens", "8", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    _, (model, data_cfg, train, gen) = recorded_train_configs(argv_file)
    assert train.lr == 0.5 and train.deepspeed_config == FP32
    assert (train.total_iters, train.batch_size, gen.max_new_tokens, train.seed) == (1, 2, 8, 3)


def test_launch_forms(recorder, tiny_models: dict, processed_tiny_root: Path, tmp_path: Path) -> None:
    """scripts/lib.sh launch(): torchrun for several processes or nodes (NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT;
    a fixed port on several nodes), DeepSpeed's launcher with HOSTFILE, and one-line errors for what cannot work."""
    env, argv_file = recorder
    script = "scripts/gpt2/sft/sft_base.sh"
    env.update(CKPT=str(tiny_models["gpt2"]["student"]), DATA_DIR=str(processed_tiny_root / "synth" / "full" / "gpt2"),
               SAVE_PATH=str(tmp_path / "save"))
    del env["MASTER_PORT"]

    def launcher(**overrides: str) -> list[str]:
        argv_file.unlink(missing_ok=True)
        e = {k: v for k, v in {**env, **overrides}.items() if v != "<unset>"}
        proc = run_script(script, e)
        assert proc.returncode == 0, proc.stderr
        launched, (_, _, train, _) = recorded_train_configs(argv_file)
        assert train.save == str(tmp_path / "save")  # the entry point and its flags follow the launcher's arguments
        return launched

    def refused(**overrides: str) -> str:
        argv_file.unlink(missing_ok=True)
        proc = run_script(script, {k: v for k, v in {**env, **overrides}.items() if v != "<unset>"})
        assert proc.returncode != 0 and not argv_file.exists()
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, proc.stderr
        return errors[0]

    torchrun = ["-m", "distill.launch"]  # torchrun, passing a failed rank's exit code through (distill/launch.py)
    # One node, several processes: torchrun; a free port of this machine unless MASTER_PORT is set (the stub's
    # answer to the free-port query is 0).
    assert launcher(GPUS_PER_NODE="2") == [*torchrun, "--nnodes", "1", "--node_rank", "0", "--nproc_per_node", "2",
                                           "--master_addr", "127.0.0.1", "--master_port", "0"]
    assert launcher(GPUS_PER_NODE="2", MASTER_PORT="29999")[-1] == "29999"
    # Several nodes: torchrun even for one process per node, the node's rank, node 0's address and a fixed port.
    multi = {"NNODES": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}
    assert launcher(**multi) == [*torchrun, "--nnodes", "2", "--node_rank", "1", "--nproc_per_node", "1",
                                 "--master_addr", "10.0.0.1", "--master_port", "29500"]
    assert launcher(**multi, MASTER_PORT="29999", GPUS_PER_NODE="8")[-5:] == ["8", "--master_addr", "10.0.0.1",
                                                                              "--master_port", "29999"]
    assert "MASTER_ADDR" in refused(NNODES="2")
    assert "NODE_RANK=2" in refused(**{**multi, "NODE_RANK": "2"}) and "NNODES=x" in refused(NNODES="x")

    # HOSTFILE: DeepSpeed's launcher (the `deepspeed` command) starts every host; ranks find LOCAL_RANK in the
    # environment (--no_local_rank: the entry points take no --local_rank flag). --num_gpus only when GPUS_PER_NODE
    # is given, else the hostfile's slots decide; a relative HOSTFILE is found from where the command was typed.
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node1 slots=4\nnode2 slots=4\n")
    deepspeed = ["-m", "deepspeed.launcher.runner", "--hostfile", str(hostfile)]
    assert launcher(HOSTFILE=str(hostfile), GPUS_PER_NODE="<unset>") == [*deepspeed, "--master_port", "29500",
                                                                         "--no_local_rank"]
    assert launcher(HOSTFILE=str(hostfile), MASTER_ADDR="node1", MASTER_PORT="29999", GPUS_PER_NODE="2",
                    DEEPSPEED_ARGS="--launcher openmpi --no_ssh_check") == [
        *deepspeed, "--master_addr", "node1", "--master_port", "29999", "--num_gpus", "2", "--no_local_rank",
        "--launcher", "openmpi", "--no_ssh_check"]
    argv_file.unlink()
    proc = subprocess.run(["bash", str(REPO_ROOT / script)], cwd=tmp_path, env={**env, "HOSTFILE": "hostfile"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert recorded_train_configs(argv_file)[0][:4] == deepspeed
    # A plain `deepspeed train_sft.py ...` (no --no_local_rank) passes --local_rank=N too: accepted and unused.
    argv = argv_file.read_text().split("\0")[:-1]
    args, classes = argv[argv.index("train_sft.py") + 1:], [ModelConfig, DataConfig, TrainConfig, GenerationConfig]
    assert parse_configs(classes, [*args, "--local_rank=1"]) == parse_configs(classes, args)
    assert parse_configs(classes, [*args, "--local-rank", "0"]) == parse_configs(classes, args)
    assert str(tmp_path / "absent") in refused(HOSTFILE=str(tmp_path / "absent"))


@pytest.mark.parametrize("script", SFT_SCRIPTS)
def test_sft_script_missing_inputs_stop_at_once(script: str, recorder, tiny_models: dict, processed_tiny_root: Path,
                                                tmp_path: Path) -> None:
    env, argv_file = recorder
    family = family_of(script)
    env.update(CKPT=str(tmp_path / "no-ckpt"), DATA_DIR=str(processed_tiny_root / "synth" / "full" / family),
               SAVE_PATH=str(tmp_path / "save"))
    proc = run_script(script, env)
    assert proc.returncode != 0 and not argv_file.exists()
    hf_id = re.search(r"HF_ID=(\S+)", (REPO_ROOT / script).read_text()).group(1)
    assert str(tmp_path / "no-ckpt") in proc.stderr and f"huggingface-cli download {hf_id}" in proc.stderr

    env.update(CKPT=str(tiny_models[family]["student"]), DATA_DIR=str(tmp_path / "no-data"))
    proc = run_script(script, env)
    assert proc.returncode != 0 and not argv_file.exists()
    assert str(tmp_path / "no-data" / "train_0.bin") in proc.stderr
    assert f"scripts/{family}/tools/process_data_dolly.sh" in proc.stderr
    assert (REPO_ROOT / "scripts" / family / "tools" / "process_data_dolly.sh").is_file()


@pytest.mark.parametrize("script", ONE_PER_FAMILY)
def test_sft_script_runs_one_step(script: str, tiny_models: dict, processed_tiny_root: Path, tmp_path: Path,
                                  subprocess_env: dict[str, str]) -> None:
    family = family_of(script)
    save = tmp_path / "save"
    env = {**subprocess_env, "CKPT": str(tiny_models[family]["student"]), "GPUS_PER_NODE": "1", "DS_CONFIG": FP32,
           "DATA_DIR": str(processed_tiny_root / "synth" / "full" / family), "SAVE_PATH": str(save)}
    proc = run_script(script, env, *TINY_FLAGS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (save / "1" / "trainer_state.json").is_file()
    assert (save / "1" / ("adapter_config.json" if "lora" in script else "model.safetensors")).is_file()
    metrics = read_metrics(save)
    assert [m["step"] for m in metrics if "train/ce" in m] == [1]
    assert any("valid/rougeL" in m for m in metrics)  # the scripts evaluate by generation
    args = json.loads((save / "args.json").read_text())
    assert (args["batch_size"], args["max_new_tokens"], args["dev_num"]) == (2, 8, 4)  # pass-through won
    assert json.loads((save / "best.json").read_text())["step"] == 1


def test_eval_script_prints_mean_and_std_over_seeds(parrot_ckpt: Path, parrot_data_root: Path, tmp_path: Path,
                                                    subprocess_env: dict[str, str]) -> None:
    save = tmp_path / "eval"
    env = {**subprocess_env, "CKPT": str(parrot_ckpt), "DATA_ROOT": str(parrot_data_root),
           "EVAL_SETS": "parrot absent", "SEEDS": "10 20", "SAVE_PATH": str(save), "GPUS_PER_NODE": "1"}
    proc = run_script("scripts/gpt2/eval/run_eval.sh", env, "--max-new-tokens", "8", "--dev-num", "4")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if "±" in line]  # one table row per set present
    assert len(rows) == 1 and "parrot" in rows[0] and rows[0].count("±") == 2, proc.stdout
    summary = json.loads((save / "summary.json").read_text())
    s = summary["sets"]["parrot"]
    assert list(summary["sets"]) == ["parrot"] and s["seeds"] == [10, 20] and s["num_examples"] == 4
    assert f"{s['rougeL_mean']:.2f} ± {s['rougeL_std']:.2f}" in rows[0]
    for seed in (10, 20):
        result = json.loads((save / "parrot" / str(seed) / "results.json").read_text())
        assert 0 < result["mean_gen_tokens"] <= 8  # --max-new-tokens 8 beat the script's 256


@pytest.mark.parametrize("script", EVAL_SCRIPTS)
def test_eval_script_missing_checkpoint_stops_at_once(script: str, recorder, tmp_path: Path) -> None:
    env, argv_file = recorder
    env.update(CKPT=str(tmp_path / "no-ckpt"))
    proc = run_script(script, env)
    assert proc.returncode != 0 and not argv_file.exists()
    assert str(tmp_path / "no-ckpt") in proc.stderr and "CKPT=" in proc.stderr
    assert f"scripts/{family_of(script)}/sft/" in proc.stderr


# ----------------------------------------------------------------------------------------------------------------
# Shared by the method launchers' tests (tests/test_onpolicy_scripts.py, tests/test_minillm_scripts.py).
# ----------------------------------------------------------------------------------------------------------------
#: family -> (its teacher's name, the launcher that fine-tunes it)
TEACHERS = {"gpt2": ("gpt2-xlarge", "sft/sft_xlarge.sh"), "opt": ("opt-2.7B", "sft/sft_2.7B.sh"),
            "llama": ("openllama2-7B", "sft/sft_7B_lora.sh")}


def stops(script: str, env: dict, root: Path, argv_file: Path) -> str:
    """The one error line of a script that must stop before launching anything."""
    argv_file.unlink(missing_ok=True)
    proc = run_script(script, env, str(root))
    assert proc.returncode != 0 and not argv_file.exists(), proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def named_launcher(error: str) -> str:
    """The script an error line tells to run (``bash scripts/...sh``), checked to exist."""
    m = re.search(r"bash (scripts/\S+\.sh)", error)
    assert m and (REPO_ROOT / m.group(1)).is_file(), error
    return m.group(1)


def check_missing_teacher_data_corpus(script: str, env: dict, root: Path, argv_file: Path, family: str,
                                      teacher_script: str, corpus: bool = True) -> None:
    """A method launcher's teacher, instruction data and pretraining corpus (scripts/common/train_flags.sh kd_inputs,
    lm_corpus_flags) on a stand-in root: each one missing stops the script in one line naming the launcher that makes
    it (the corpus only where the script uses one). Leaves the corpus removed."""
    teacher, _ = TEACHERS[family]
    teacher_dir = root / f"results/{family}/train/sft/{teacher}/best"
    teacher_dir.rmdir()
    error = stops(script, env, root, argv_file)
    assert f"missing {'results/llama/train/sft/openllama2-7B/best' if family == 'llama' else teacher_dir} " in error
    assert named_launcher(error) == f"scripts/{family}/{teacher_script}"
    teacher_dir.mkdir()
    data = root / f"processed_data/dolly/full/{family}/train_0.bin"
    data.unlink()
    error = stops(script, env, root, argv_file)
    assert f"missing {data} " in error and named_launcher(error) == f"scripts/{family}/tools/process_data_dolly.sh"
    data.touch()
    lm = root / f"processed_data/openwebtext/full/{family}/train_0.bin"
    lm.unlink()
    if corpus:
        error = stops(script, env, root, argv_file)
        assert f"missing {lm} " in error and "LM_DATA_DIR=none" in error
        assert named_launcher(error) == f"scripts/{family}/tools/process_data_pretrain.sh"
