"""Launch scripts of MiniLLM: scripts/<family>/minillm/train_*.sh (scripts/common/minillm.sh) and the SFT
initialisations they start from, scripts/<family>/minillm/init_*.sh.

The command lines are recorded with the stand-in ``PYTHON`` of tests/test_scripts.py, run on a repository root of
empty stand-ins for every default input (the launcher's first argument), so the default paths themselves are checked:
each script's values are the LMOps minillm/ release's (the tables below, read off its scripts/{gpt2,opt,llama}/
minillm/*.sh and the SFT scripts behind its initial checkpoints), environment overrides and flags given to the script
win, and a missing input stops the script at once with the path and the launcher that makes it. The GPT-2 base chain
then runs for real on the tiny models: the initialisation (its best checkpoint by validation loss), then a few PPO
steps of MiniLLM from it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distill.config import (MINILLM_TRAIN_DEFAULTS, DataConfig, GenerationConfig, MiniLLMConfig, ModelConfig,
                            TrainConfig, no_effect_warnings, parse_configs)
from tests.conftest import REPO_ROOT, read_metrics
from tests.test_scripts import (FP32, TEACHERS, check_missing_teacher_data_corpus, named_launcher,  # noqa: F401
                                recorded_train_configs, recorder, run_script, stops)  # (recorder: a fixture)
# script -> (student, batch size, gradient accumulation, chunk size, LR schedule, gradient checkpointing, ZeRO stage,
# LoRA student, its init launcher). The release: GPT-2 train_{base,medium,large}_xl.sh; OPT train_1.3B_13B.sh's values
# for this toolkit's OPT students; LLaMA train_7B_13B.sh / train_7B_13B_lora.sh (cosine_trm).
RELEASE = {
    "scripts/gpt2/minillm/train_base_xl.sh": ("gpt2-base", 16, 1, 16, "constant", False, 1, False, "init_base.sh"),
    "scripts/gpt2/minillm/train_medium_xl.sh": ("gpt2-medium", 2, 2, 8, "constant", False, 1, False,
                                                "init_medium.sh"),
    "scripts/gpt2/minillm/train_large_xl.sh": ("gpt2-large", 2, 2, 4, "constant", False, 1, False, "init_large.sh"),
    "scripts/opt/minillm/train_125M_2.7B.sh": ("opt-125M", 16, 1, 16, "constant", True, 1, False, "init_125M.sh"),
    "scripts/opt/minillm/train_350M_2.7B.sh": ("opt-350M", 16, 1, 16, "constant", True, 1, False, "init_350M.sh"),
    "scripts/opt/minillm/train_1.3B_2.7B.sh": ("opt-1.3B", 16, 1, 16, "constant", True, 1, False, "init_1.3B.sh"),
    "scripts/llama/minillm/train_3B_7B.sh": ("openllama2-3B", 8, 2, 8, "cosine", True, 2, False, "init_3B.sh"),
    "scripts/llama/minillm/train_3B_7B_lora.sh": ("openllama2-3B", 8, 2, 8, "cosine", True, 1, True,
                                                  "init_3B_lora.sh"),
}
# script -> (model, lr, batch size, gradient accumulation, epochs, seed, LoRA, gradient checkpointing, ZeRO stage):
# the release's sft_{base,medium,large}.sh (GPT-2), sft_1.3B.sh (OPT), sft_7B.sh / sft_7B_lora.sh (LLaMA).
INIT_RELEASE = {
    "scripts/gpt2/minillm/init_base.sh": ("gpt2-base", 5e-4, 2, 1, 20, 10, False, False, 1),
    "scripts/gpt2/minillm/init_medium.sh": ("gpt2-medium", 1e-4, 2, 1, 20, 10, False, False, 1),
    "scripts/gpt2/minillm/init_large.sh": ("gpt2-large", 1e-4, 2, 1, 10, 10, False, False, 1),
    "scripts/opt/minillm/init_125M.sh": ("opt-125M", 5e-5, 2, 1, 10, 10, False, False, 1),
    "scripts/opt/minillm/init_350M.sh": ("opt-350M", 5e-5, 2, 1, 10, 10, False, False, 1),
    "scripts/opt/minillm/init_1.3B.sh": ("opt-1.3B", 5e-5, 2, 1, 10, 10, False, False, 1),
    "scripts/llama/minillm/init_3B.sh": ("openllama2-3B", 1e-5, 1, 2, 10, 10, False, True, 2),
    "scripts/llama/minillm/init_3B_lora.sh": ("openllama2-3B", 5e-4, 4, 1, 20, 20, True, True, 2),
}
CLASSES = [ModelConfig, DataConfig, TrainConfig, GenerationConfig, MiniLLMConfig]


def family_of(script: str) -> str:
    return script.split("/")[1]


def init_dir(family: str, student: str, lora: bool) -> str:
    return f"results/{family}/train/{'minillm_init_lora' if lora else 'minillm_init'}/{student}/best"


def make_root(root: Path) -> Path:
    """A repository root holding a stand-in for every default input of every MiniLLM and init script (the recorder
    only needs them to exist): pretrained and initialised students, SFT'd teachers, processed Dolly and the processed
    pretraining corpus of each family, and the real DeepSpeed configs."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "deepspeed").symlink_to(REPO_ROOT / "configs" / "deepspeed")
    for script, (student, *_, lora, _) in RELEASE.items():
        family = family_of(script)
        teacher = TEACHERS[family][0]
        for d in (f"checkpoints/{student}", f"checkpoints/{teacher}", init_dir(family, student, lora),
                  f"results/{family}/train/sft/{teacher}/best", f"processed_data/dolly/full/{family}",
                  f"processed_data/openwebtext/full/{family}"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / f"processed_data/dolly/full/{family}/train_0.bin").touch()
        (root / f"processed_data/openwebtext/full/{family}/train_0.bin").touch()
    return root


def recorded(argv_file: Path, defaults: bool = True) -> list:
    """The train_minillm.py flags of the recorded command (one process: no launcher before it), parsed as the entry
    point parses them (its own defaults, MINILLM_TRAIN_DEFAULTS) or, ``defaults=False``, with the toolkit's plain
    defaults — where both give the release's value, the launcher states it itself."""
    argv = argv_file.read_text().split("\0")[:-1]
    assert argv[0] == "train_minillm.py", argv[:3]
    return parse_configs(CLASSES, argv[1:], defaults=MINILLM_TRAIN_DEFAULTS if defaults else None)


def test_every_minillm_script_is_checked() -> None:
    found = {p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("scripts/*/minillm/*.sh")}
    assert found == set(RELEASE) | set(INIT_RELEASE)
    assert {f"scripts/{family_of(s)}/minillm/{v[-1]}" for s, v in RELEASE.items()} == set(INIT_RELEASE)


@pytest.mark.parametrize("script", sorted(RELEASE))
def test_minillm_script_command_line(script: str, recorder, tmp_path: Path) -> None:
    env, argv_file = recorder
    root = make_root(tmp_path / "repo")
    family = family_of(script)
    student, batch, acc, chunk, schedule, checkpointing, zero, lora, _ = RELEASE[script]
    teacher = TEACHERS[family][0]

    proc = run_script(script, env, str(root))
    assert proc.returncode == 0, proc.stderr
    for defaults in (True, False):
        cfgs = recorded(argv_file, defaults)
        model, data, train, gen, mini = cfgs
        # PPO and MiniLLM, as released.
        assert (mini.type, mini.ppo_epochs, mini.num_rollouts, mini.chunk_size) == ("minillm", 4, 256, chunk)
        assert (mini.length_norm, mini.single_step_reg, mini.teacher_mixed_alpha) == (True, True, 0.2)
        assert (mini.reward_scaling, mini.cliprange_reward, mini.kd_ratio, mini.seed_ppo) == (0.5, 100.0, 0.5, 42)
        assert (mini.cliprange, mini.gamma) == (0.2, 0.95)  # LMOps's defaults, not on its launch line
        # The optimisation (the launch line's values and the AdamW its trainer fixes) and the run's length.
        assert (train.lr, train.lr_schedule, train.lr_min, train.warmup_iters) == (5e-6, schedule, 0.0, 100)
        assert (train.adam_beta1, train.adam_beta2, train.weight_decay, train.clip_grad) == (0.9, 0.95, 1e-6, 1.0)
        assert (train.batch_size, train.gradient_accumulation_steps) == (batch, acc)
        assert (train.epochs, train.total_iters) == (10, 5000)
        assert (data.max_length, data.max_prompt_length, gen.max_new_tokens, data.dev_num) == (512, 256, 256, 1000)
        assert (gen.do_sample, gen.top_k, gen.top_p, gen.temperature) == (True, 0, 1.0, 1.0)
        assert (train.seed, data.seed_lm) == (10, 7)
        assert (train.eval_gen, train.eval_interval, train.save_interval, train.log_interval) == (True, 100, 500, 16)
        assert model.gradient_checkpointing == checkpointing
        assert no_effect_warnings(*cfgs) == []  # every flag of the recipe does something with the others
    # The default inputs: the initialised student, the SFT'd teacher, the data, the pretraining corpus.
    if lora:
        assert (model.model_path, model.peft, model.peft_path) == (
            f"{root}/checkpoints/{student}", "lora", f"{root}/{init_dir(family, student, True)}")
    else:
        assert (model.model_path, model.peft) == (f"{root}/{init_dir(family, student, False)}", None)
    if family == "llama":  # the LoRA-tuned teacher: base + adapter, as scripts/llama/kd/kd_3B.sh
        assert (mini.teacher_model_path, mini.teacher_peft_path) == (
            f"checkpoints/{teacher}", f"results/llama/train/sft/{teacher}/best")
    else:
        assert (mini.teacher_model_path, mini.teacher_peft_path) == (
            f"{root}/results/{family}/train/sft/{teacher}/best", None)
    assert data.data_dir == f"{root}/processed_data/dolly/full/{family}"
    assert (data.lm_data_dir, data.lm_coef) == (f"{root}/processed_data/openwebtext/full/{family}", 1.0)
    name = f"{student}-lora" if lora else student
    assert train.save == f"{root}/results/{family}/train/minillm/{name}-{teacher}"
    assert train.deepspeed_config == f"{root}/configs/deepspeed/ds_config_zero{zero}_fp32.json"
    assert not (mini.teacher_model_fp16 or mini.teacher_model_bf16)  # fp32 here; fp16 where native (below)

    # Environment overrides replace the defaults: the method's values, the corpus (none: its own directory), the
    # precision of the teacher and of the DeepSpeed config.
    env.update(LR="1e-5", BATCH_SIZE="4", GRAD_ACC="3", CHUNK_SIZE="2", KD_RATIO="0.8", TEACHER_MIXED_ALPHA="0.1",
               NUM_ROLLOUTS="64", PPO_EPOCHS="2", TOTAL_ITERS="7", EVAL_INTERVAL="5", SEED_PPO="1",
               LM_DATA_DIR="none", STUB_PRECISION="fp16")
    proc = run_script(script, env, str(root))
    assert proc.returncode == 0, proc.stderr
    cfgs = recorded(argv_file)
    model, data, train, gen, mini = cfgs
    assert (train.lr, train.batch_size, train.gradient_accumulation_steps, train.total_iters, train.eval_interval) == (
        1e-5, 4, 3, 7, 5)
    assert (mini.chunk_size, mini.kd_ratio, mini.teacher_mixed_alpha, mini.num_rollouts, mini.ppo_epochs,
            mini.seed_ppo) == (2, 0.8, 0.1, 64, 2, 1)
    assert (data.lm_data_dir, data.lm_coef) == (None, 0.0) and train.save.endswith(f"/{name}-{teacher}-no_pt")
    assert mini.teacher_model_fp16 and train.deepspeed_config.endswith(f"ds_config_zero{zero}_fp16.json")
    assert no_effect_warnings(*cfgs) == []

    # Flags given to the script win over both.
    proc = run_script(script, env, str(root), "--lr", "3e-5", "--chunk-size", "5", "--no-length-norm",
                      "--teacher-mixed-alpha", "0", "--lm-data-dir", str(root / "corpus"), "--no-teacher-model-fp16",
                      "--max-new-tokens", "64")
    assert proc.returncode == 0, proc.stderr
    model, data, train, gen, mini = recorded(argv_file)
    assert (train.lr, mini.chunk_size, mini.length_norm, mini.teacher_mixed_alpha, gen.max_new_tokens) == (
        3e-5, 5, False, 0.0, 64)
    assert not mini.teacher_model_fp16  # the caller's dtype flag replaces the launcher's
    assert data.lm_data_dir == str(root / "corpus")  # the flag, unchecked by the launcher (the trainer checks it)
    assert train.save.endswith(f"/{name}-{teacher}")


@pytest.mark.parametrize("script", sorted(RELEASE))
def test_minillm_script_missing_inputs_stop_at_once(script: str, recorder, tmp_path: Path) -> None:
    env, argv_file = recorder
    root = make_root(tmp_path / "repo")
    family = family_of(script)
    student, *_, lora, init_script = RELEASE[script]
    teacher, teacher_script = TEACHERS[family]

    # The initialisation: the error names its init launcher, whose run writes exactly that path, selecting by
    # validation loss (no generation in its evaluations).
    init = root / init_dir(family, student, lora)
    init.rmdir()
    error = stops(script, env, root, argv_file)
    assert f"missing {init} " in error
    assert named_launcher(error) == f"scripts/{family}/minillm/{init_script}"
    proc = run_script(named_launcher(error), env, str(root))
    assert proc.returncode == 0, proc.stderr
    _, (model, _, train, _) = recorded_train_configs(argv_file)
    assert Path(train.save) / "best" == init and train.eval_gen is False
    assert model.peft == ("lora" if lora else None)
    init.mkdir()

    # The teacher (OpenLLaMA's: the pretrained base, then its SFT adapter), the data, the pretraining corpus.
    if family == "llama":
        base = root / f"checkpoints/{teacher}"
        base.rmdir()
        error = stops(script, env, root, argv_file)
        assert f"missing checkpoints/{teacher} " in error and "huggingface-cli download" in error
        base.mkdir()
    check_missing_teacher_data_corpus(script, env, root, argv_file, family, teacher_script)
    # Without the corpus (LM_DATA_DIR=none: the release's *_no_pt.sh) it runs without the pretraining term.
    proc = run_script(script, {**env, "LM_DATA_DIR": "none"}, str(root))
    assert proc.returncode == 0, proc.stderr
    assert recorded(argv_file)[1].lm_data_dir is None


@pytest.mark.parametrize("script", sorted(INIT_RELEASE))
def test_init_script_command_line(script: str, recorder, tmp_path: Path) -> None:
    env, argv_file = recorder
    root = make_root(tmp_path / "repo")
    family = family_of(script)
    name, lr, batch, acc, epochs, seed, lora, checkpointing, zero = INIT_RELEASE[script]
    proc = run_script(script, env, str(root))
    assert proc.returncode == 0, proc.stderr
    _, (model, data, train, gen) = recorded_train_configs(argv_file)
    assert model.model_path == f"{root}/checkpoints/{name}"
    assert data.data_dir == f"{root}/processed_data/dolly/full/{family}"
    assert train.save == f"{root}/{init_dir(family, name, lora)[:-len('/best')]}"
    assert (train.lr, train.batch_size, train.gradient_accumulation_steps, train.epochs, train.seed) == (
        lr, batch, acc, epochs, seed)
    # The release's SFT: cosine from the start, weight decay 1e-2, evaluated and saved once per epoch; selected by
    # validation loss, so no generation.
    assert (train.lr_schedule, train.warmup_iters, train.weight_decay, train.clip_grad) == ("cosine", 0, 0.01, 1.0)
    assert (train.eval_gen, train.eval_interval, train.save_interval) == (False, -1, -1)
    assert (data.max_length, data.max_prompt_length) == (512, 256)
    assert (model.peft, model.gradient_checkpointing) == ("lora" if lora else None, checkpointing)
    if lora:  # the release's LoRA defaults
        assert (model.peft_lora_r, model.peft_lora_alpha, model.peft_lora_dropout) == (8, 32, 0.1)
    assert train.deepspeed_config == f"{root}/configs/deepspeed/ds_config_zero{zero}_fp32.json"
    proc = run_script(script, {**env, "LR": "0.5"}, str(root), "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    _, (_, _, train, _) = recorded_train_configs(argv_file)
    assert (train.lr, train.epochs) == (0.5, 1)


def test_minillm_chain_runs_on_the_tiny_models(tiny_models: dict, processed_tiny: Path, processed_tiny_lm: Path,
                                               tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """init_base.sh (3 SFT steps, each evaluated by loss only) then train_base_xl.sh from its best checkpoint: 4 PPO
    steps over two rollout stores (8 rollouts, batch 4, one PPO epoch), the teacher-mixed sampling and the
    pretraining term (on the built-in corpus) as released."""
    init, run = tmp_path / "init", tmp_path / "minillm"
    env = {**subprocess_env, "GPUS_PER_NODE": "1", "DS_CONFIG": FP32, "DATA_DIR": str(processed_tiny)}
    tiny = ["--max-length", "128", "--max-prompt-length", "100", "--report-to", "none", "--log-interval", "1",
            "--dev-num", "4", "--eval-batch-size", "4"]
    proc = run_script("scripts/gpt2/minillm/init_base.sh", {
        **env, "CKPT": str(tiny_models["gpt2"]["student"]), "SAVE_PATH": str(init), "EVAL_INTERVAL": "1",
        "SAVE_INTERVAL": "1"}, *tiny, "--total-iters", "3", "--batch-size", "4", "--lr", "1e-3")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    best = json.loads((init / "best.json").read_text())
    losses = {m["step"]: m["valid/loss"] for m in read_metrics(init) if "valid/loss" in m}
    assert best["metric"] == "valid/loss" and not any("valid/rougeL" in m for m in read_metrics(init))
    assert best["value"] == min(losses.values()) and len(losses) == 3
    assert (init / "best").is_dir()

    proc = run_script("scripts/gpt2/minillm/train_base_xl.sh", {
        **env, "CKPT": str(init / "best"), "TEACHER_CKPT": str(tiny_models["gpt2"]["teacher"]),
        "LM_DATA_DIR": str(processed_tiny_lm), "SAVE_PATH": str(run), "WARMUP_ITERS": "0"},
        *tiny, "--max-new-tokens", "12", "--num-rollouts", "8", "--batch-size", "4", "--chunk-size", "4",
        "--ppo-epochs", "1", "--total-iters", "4", "--eval-interval", "0", "--no-eval-gen")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run / "run_summary.json").read_text())
    assert summary["steps"] == 4
    train = [m for m in read_metrics(run) if "train/pg" in m]
    assert [m["step"] for m in train] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for m in train for k, v in m.items() if k.startswith("train/"))
    assert [m["train/refills"] for m in train] == [1, 1, 2, 2]  # a store of 8 rollouts: 2 micro-batches of 4
    assert all(m["train/weight_min"] < 1.0 for m in train)  # sampled from the teacher-mixed distribution (0.2)
    assert all(math.isfinite(m["train/lm"]) for m in train)  # the pretraining term on the built-in corpus
    args = json.loads((run / "args.json").read_text())
    assert (args["type"], args["kd_ratio"], args["model_path"]) == ("minillm", 0.5, str(init / "best"))
    assert args["lm_data_dir"] == str(processed_tiny_lm)
