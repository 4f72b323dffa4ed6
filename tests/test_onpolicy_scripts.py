"""Launch scripts of the on-policy methods: scripts/<family>/{gkd,imitkd,distillm}/*.sh (scripts/common/onpolicy.sh)
and the SFT initialisations they start from, scripts/<family>/init/*.sh.

The command lines are recorded with the stand-in ``PYTHON`` of tests/test_scripts.py, run on a repository root of
empty stand-ins for every default input (the launcher's first argument), so the default paths themselves are checked:
each script's values are the DistiLLM release's (the table below, read off its scripts/{gpt2,opt,openllama2}/...),
environment overrides and flags given to the script win, and a missing input stops the script at once with the path
and the launcher that makes it. The three GPT-2 base scripts then train 2 real steps on the tiny models.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distill.config import (DataConfig, DistillConfig, GenerationConfig, ModelConfig, TrainConfig,
                            no_effect_warnings, parse_configs)
from tests.conftest import REPO_ROOT, read_metrics
from tests.test_scripts import (FP32, TEACHERS, check_missing_teacher_data_corpus, named_launcher,  # noqa: F401
                                recorded_train_configs, recorder, run_script, stops)  # (recorder: a fixture)
# script -> (student, --type, lr, batch size, epochs, pretraining corpus), as released (gradient accumulation 1 in
# every one). GKD on GPT-2 has no corpus; OPT and OpenLLaMA train with one in all three methods.
RELEASE = {
    "scripts/gpt2/gkd/gkd_base.sh": ("gpt2-base", "mixed-jsd", 5e-4, 2, 20, False),
    "scripts/gpt2/gkd/gkd_medium.sh": ("gpt2-medium", "mixed-jsd", 5e-4, 8, 20, False),
    "scripts/gpt2/gkd/gkd_large.sh": ("gpt2-large", "mixed-jsd", 5e-4, 8, 10, False),
    "scripts/gpt2/imitkd/imitkd_base.sh": ("gpt2-base", "mixed-fkl", 5e-4, 8, 20, True),
    "scripts/gpt2/imitkd/imitkd_medium.sh": ("gpt2-medium", "mixed-fkl", 5e-4, 8, 20, True),
    "scripts/gpt2/imitkd/imitkd_large.sh": ("gpt2-large", "mixed-fkl", 5e-4, 4, 10, True),
    "scripts/gpt2/distillm/train_0.1B_1.5B.sh": ("gpt2-base", "adaptive-sfkl", 5e-4, 8, 20, True),
    "scripts/gpt2/distillm/train_0.3B_1.5B.sh": ("gpt2-medium", "adaptive-srkl", 5e-4, 8, 20, True),
    "scripts/gpt2/distillm/train_0.7B_1.5B.sh": ("gpt2-large", "adaptive-srkl", 1e-4, 4, 10, True),
    "scripts/opt/gkd/gkd_125M.sh": ("opt-125M", "mixed-jsd", 5e-5, 8, 20, True),
    "scripts/opt/gkd/gkd_350M.sh": ("opt-350M", "mixed-jsd", 5e-5, 8, 20, True),
    "scripts/opt/gkd/gkd_1.3B.sh": ("opt-1.3B", "mixed-jsd", 5e-5, 8, 10, True),
    "scripts/opt/imitkd/imitkd_125M.sh": ("opt-125M", "mixed-fkl", 5e-5, 8, 20, True),
    "scripts/opt/imitkd/imitkd_350M.sh": ("opt-350M", "mixed-fkl", 5e-5, 8, 20, True),
    "scripts/opt/imitkd/imitkd_1.3B.sh": ("opt-1.3B", "mixed-fkl", 5e-5, 8, 10, True),
    "scripts/opt/distillm/train_0.1B_2.7B.sh": ("opt-125M", "adaptive-srkl", 5e-5, 8, 20, True),
    "scripts/opt/distillm/train_0.3B_2.7B.sh": ("opt-350M", "adaptive-srkl", 5e-5, 8, 20, True),
    "scripts/opt/distillm/train_1.3B_2.7B.sh": ("opt-1.3B", "adaptive-srkl", 5e-5, 8, 10, True),
    "scripts/llama/gkd/gkd_3B.sh": ("openllama2-3B", "mixed-jsd", 5e-4, 8, 10, True),
    "scripts/llama/imitkd/imitkd_3B.sh": ("openllama2-3B", "mixed-fkl", 5e-4, 8, 10, True),
    "scripts/llama/distillm/train_3B_7B.sh": ("openllama2-3B", "adaptive-srkl", 5e-4, 8, 10, True),
}
# script -> (model, lr, batch size, epochs) of the SFT initialisation (3 epochs everywhere; scripts/<family>/init/).
INIT_RELEASE = {
    "scripts/gpt2/init/init_base.sh": ("gpt2-base", 5e-4, 8, 3),
    "scripts/gpt2/init/init_medium.sh": ("gpt2-medium", 5e-4, 8, 3),
    "scripts/gpt2/init/init_large.sh": ("gpt2-large", 5e-4, 8, 3),
    "scripts/opt/init/init_125M.sh": ("opt-125M", 5e-5, 8, 3),
    "scripts/opt/init/init_350M.sh": ("opt-350M", 5e-5, 8, 3),
    "scripts/opt/init/init_1.3B.sh": ("opt-1.3B", 5e-5, 2, 3),
    "scripts/llama/init/init_3B_lora.sh": ("openllama2-3B", 5e-4, 8, 3),
}
CLASSES = [ModelConfig, DataConfig, TrainConfig, GenerationConfig, DistillConfig]


def family_of(script: str) -> str:
    return script.split("/")[1]


def method_of(script: str) -> str:
    return script.split("/")[2]


def make_root(root: Path) -> Path:
    """A repository root holding a stand-in for every default input of every on-policy and init script (the
    recorder only needs them to exist): pretrained and init students, SFT'd teachers, processed Dolly and the
    processed pretraining corpus of each family, and the real DeepSpeed configs."""
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "deepspeed").symlink_to(REPO_ROOT / "configs" / "deepspeed")
    for script, (student, *_) in RELEASE.items():
        family = family_of(script)
        teacher = TEACHERS[family][0]
        for d in (f"checkpoints/{student}", f"checkpoints/{teacher}", f"results/{family}/train/init/{student}/best",
                  f"results/{family}/train/sft/{teacher}/best", f"processed_data/dolly/full/{family}",
                  f"processed_data/openwebtext/full/{family}"):
            (root / d).mkdir(parents=True, exist_ok=True)
        (root / f"processed_data/dolly/full/{family}/train_0.bin").touch()
        (root / f"processed_data/openwebtext/full/{family}/train_0.bin").touch()
    return root


def recorded(argv_file: Path) -> list:
    """The parsed train_distill.py flags of the recorded command (one process: no launcher before it)."""
    argv = argv_file.read_text().split("\0")[:-1]
    assert argv[0] == "train_distill.py", argv[:3]
    return parse_configs(CLASSES, argv[1:])


def test_every_onpolicy_script_is_checked() -> None:
    found = {p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("scripts/*/*/*.sh")
             if p.parent.name in ("gkd", "imitkd", "distillm")}
    assert found == set(RELEASE)
    assert {p.relative_to(REPO_ROOT).as_posix() for p in REPO_ROOT.glob("scripts/*/init/*.sh")} == set(INIT_RELEASE)


@pytest.mark.parametrize("script", sorted(RELEASE))
def test_onpolicy_script_command_line(script: str, recorder, tmp_path: Path) -> None:
    env, argv_file = recorder
    root = make_root(tmp_path / "repo")
    family, method = family_of(script), method_of(script)
    student, type_, lr, batch, epochs, corpus = RELEASE[script]
    teacher = TEACHERS[family][0]

    proc = run_script(script, env, str(root))
    assert proc.returncode == 0, proc.stderr
    cfgs = recorded(argv_file)
    model, data, train, gen, distill = cfgs
    # The method, as released: on-policy steps with a 1000-answer replay buffer, pure KD (kd-ratio 1), the student's
    # answers sampled at temperature 1 with one beam.
    assert (distill.type, distill.student_gen, distill.capacity, distill.kd_ratio) == (type_, True, 1000, 1.0)
    if type_.startswith("mixed-"):
        assert distill.mixed_alpha == {"gkd": 0.5, "imitkd": 1.0}[method]
    else:
        assert (distill.init_threshold, distill.loss_eps, distill.replay_ratio) == (
            (0.2, 0.2, "decreasing") if family == "llama" else (0.0, 0.1, "decreasing"))
        assert distill.skew_alpha == 0.1
    assert (distill.gen_do_sample, distill.gen_temperature, distill.gen_top_k, distill.gen_top_p,
            distill.gen_num_beams, distill.gen_max_new_tokens) == (True, 1.0, 0, 1.0, 1, None)
    assert no_effect_warnings(*cfgs) == []  # every flag of the recipe does something with the others
    # The optimisation and validation of the release's launchers.
    assert (train.lr, train.batch_size, train.gradient_accumulation_steps, train.epochs) == (lr, batch, 1, epochs)
    assert (train.lr_schedule, train.lr_min, train.warmup_iters, train.weight_decay, train.clip_grad, train.seed) == (
        "cosine", 0.0, 0, 0.01, 1.0, 10)
    assert (data.max_length, data.max_prompt_length, gen.max_new_tokens) == (512, 256, 256)
    assert (train.eval_gen, train.eval_interval, train.save_interval) == (True, -1, -1)
    assert (gen.do_sample, gen.top_k, gen.top_p, gen.temperature) == (True, 0, 1.0, 1.0)
    assert model.gradient_checkpointing == (family != "gpt2")
    # The default inputs: the SFT-initialised student, the SFT'd teacher, the pretraining corpus.
    if family == "llama":  # the init adapter on the pretrained base; the LoRA-tuned teacher
        assert (model.model_path, model.peft, model.peft_path) == (
            f"{root}/checkpoints/{student}", "lora", f"{root}/results/llama/train/init/{student}/best")
        assert (distill.teacher_model_path, distill.teacher_peft_path) == (
            f"checkpoints/{teacher}", f"results/llama/train/sft/{teacher}/best")
    else:
        assert (model.model_path, model.peft) == (f"{root}/results/{family}/train/init/{student}/best", None)
        assert distill.teacher_model_path == f"{root}/results/{family}/train/sft/{teacher}/best"
    assert data.data_dir == f"{root}/processed_data/dolly/full/{family}"
    assert data.lm_data_dir == (f"{root}/processed_data/openwebtext/full/{family}" if corpus else None)
    assert data.lm_coef == (1.0 if corpus else 0.0)
    assert train.save == f"{root}/results/{family}/train/{method}/{student}-{teacher}-{type_}"
    assert train.deepspeed_config == f"{root}/configs/deepspeed/ds_config_zero1_fp32.json"
    assert not (distill.teacher_model_fp16 or distill.teacher_model_bf16)  # fp32 here; fp16 where native (below)

    # Environment overrides replace the defaults: the method's values, the corpus (none), the precision.
    env.update(LR="0.5", KD_RATIO="0.8", CAPACITY="16", MIXED_ALPHA="0.25", INIT_THRESHOLD="0.3", LOSS_EPS="0.05",
               LM_DATA_DIR="none", STUB_PRECISION="fp16")
    proc = run_script(script, env, str(root))
    assert proc.returncode == 0, proc.stderr
    model, data, train, gen, distill = recorded(argv_file)
    assert (train.lr, distill.kd_ratio, distill.capacity, data.lm_data_dir) == (0.5, 0.8, 16, None)
    assert (distill.mixed_alpha if type_.startswith("mixed-") else (distill.init_threshold, distill.loss_eps)) == (
        0.25 if type_.startswith("mixed-") else (0.3, 0.05))
    assert distill.teacher_model_fp16 and train.deepspeed_config.endswith("ds_config_zero1_fp16.json")

    # Flags given to the script win over both; another --type brings its own schedule's flags and names the output.
    other = "adaptive-fkl" if type_.startswith("mixed-") else "mixed-tvd"
    proc = run_script(script, env, str(root), "--type", other, "--lr", "3e-5", "--capacity", "8", "--kd-ratio", "0.6",
                      "--epochs", "1", "--lm-data-dir", str(root / "corpus"))
    assert proc.returncode == 0, proc.stderr
    cfgs = recorded(argv_file)
    model, data, train, gen, distill = cfgs
    assert (distill.type, train.lr, distill.capacity, distill.kd_ratio, train.epochs) == (other, 3e-5, 8, 0.6, 1)
    assert data.lm_data_dir == str(root / "corpus")  # the flag, unchecked by the launcher (the trainer checks it)
    assert train.save.endswith(f"/train/{method}/{student}-{teacher}-{other}")
    assert no_effect_warnings(*cfgs) == []
    # A plain --type trains off-policy: no on-policy flag is left to warn about.
    proc = run_script(script, {**env, "LM_DATA_DIR": ""}, str(root), "--type", "fkl")
    assert proc.returncode == 0, proc.stderr
    cfgs = recorded(argv_file)
    assert (cfgs[4].type, cfgs[4].student_gen) == ("fkl", False) and no_effect_warnings(*cfgs) == []
    assert cfgs[1].lm_data_dir == (f"{root}/processed_data/openwebtext/full/{family}" if corpus else None)


@pytest.mark.parametrize("script", sorted(RELEASE))
def test_onpolicy_script_missing_inputs_stop_at_once(script: str, recorder, tmp_path: Path) -> None:
    env, argv_file = recorder
    root = make_root(tmp_path / "repo")
    family = family_of(script)
    student, _, _, _, _, corpus = RELEASE[script]
    teacher, teacher_script = TEACHERS[family]

    # The student's SFT initialisation: the error names its init launcher, whose run writes exactly that path.
    init = root / f"results/{family}/train/init/{student}/best"
    init.rmdir()
    error = stops(script, env, root, argv_file)
    assert f"missing {init} " in error
    init_script = named_launcher(error)
    assert init_script in INIT_RELEASE
    proc = run_script(init_script, env, str(root))
    assert proc.returncode == 0, proc.stderr
    assert Path(recorded_train_configs(argv_file)[1][2].save) / "best" == init
    init.mkdir()

    # The teacher (the adapter of OpenLLaMA's LoRA teacher), the instruction data, the pretraining corpus.
    check_missing_teacher_data_corpus(script, env, root, argv_file, family, teacher_script, corpus)
    # Without the corpus (LM_DATA_DIR=none; GKD on GPT-2 by default) it runs without the pretraining term.
    proc = run_script(script, {**env, "LM_DATA_DIR": "none"}, str(root))
    assert proc.returncode == 0, proc.stderr
    assert recorded(argv_file)[1].lm_data_dir is None


@pytest.mark.parametrize("script", sorted(INIT_RELEASE))
def test_init_script_command_line(script: str, recorder, tmp_path: Path) -> None:
    env, argv_file = recorder
    root = make_root(tmp_path / "repo")
    family = family_of(script)
    name, lr, batch, epochs = INIT_RELEASE[script]
    proc = run_script(script, env, str(root))
    assert proc.returncode == 0, proc.stderr
    _, (model, data, train, gen) = recorded_train_configs(argv_file)
    assert model.model_path == f"{root}/checkpoints/{name}"
    assert data.data_dir == f"{root}/processed_data/dolly/full/{family}"
    assert train.save == f"{root}/results/{family}/train/init/{name}"
    assert (train.lr, train.batch_size, train.gradient_accumulation_steps, train.epochs) == (lr, batch, 1, epochs)
    assert (train.eval_gen, gen.do_sample, gen.top_k, gen.top_p, gen.temperature) == (True, True, 0, 1.0, 1.0)
    lora = family == "llama"  # the release's LoRA defaults (r 16, alpha 64), seed 20, ZeRO-2
    assert (model.peft, model.gradient_checkpointing) == (("lora", True) if lora else (None, False))
    if lora:
        assert (model.peft_lora_r, model.peft_lora_alpha, model.peft_lora_dropout, train.seed) == (16, 64, 0.1, 20)
    assert train.deepspeed_config == f"{root}/configs/deepspeed/ds_config_zero{2 if lora else 1}_fp32.json"
    proc = run_script(script, {**env, "LR": "0.5"}, str(root), "--epochs", "1")
    assert proc.returncode == 0, proc.stderr
    _, (_, _, train, _) = recorded_train_configs(argv_file)
    assert (train.lr, train.epochs) == (0.5, 1)


@pytest.fixture(scope="module")
def tiny_corpus(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A processed pretraining corpus for the tiny gpt2 models (32-token chunks)."""
    from tools import process_data_pretrain

    base = tmp_path_factory.mktemp("onpolicy_lm")
    corpus = base / "corpus.txt"
    corpus.write_text("\n".join(f"document {i} about rivers<@x(x!>and stones {i * 7}" for i in range(200)) + "\n")
    process_data_pretrain.process(process_data_pretrain.parse_args(
        ["--data-path", str(corpus), "--processed-data-dir", str(base / "lm"), "--model-path",
         str(tiny_models["gpt2"]["teacher"]), "--max-length", "32", "--dev-num", "2"]))
    return next(p.parent for p in (base / "lm").rglob("train_0.bin"))


@pytest.mark.parametrize("script", ["scripts/gpt2/gkd/gkd_base.sh", "scripts/gpt2/imitkd/imitkd_base.sh",
                                    "scripts/gpt2/distillm/train_0.1B_1.5B.sh",
                                    "scripts/opt/distillm/train_0.1B_2.7B.sh"])
def test_onpolicy_script_runs_two_steps(script: str, tiny_models: dict, processed_tiny_root: Path,
                                        tiny_corpus: Path, tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    save = tmp_path / "save"
    corpus = RELEASE[script][5]
    family = family_of(script)  # the tiny families share one tokenizer, so the gpt2 corpus serves them all
    env = {**subprocess_env, "CKPT": str(tiny_models[family]["student"]), "GPUS_PER_NODE": "1", "DS_CONFIG": FP32,
           "TEACHER_CKPT": str(tiny_models[family]["teacher"]),
           "DATA_DIR": str(processed_tiny_root / "synth" / "full" / family),
           "LM_DATA_DIR": str(tiny_corpus) if corpus else "none", "SAVE_PATH": str(save)}
    # The release's DistiLLM starts at threshold 0 (no student answers until the validation loss rises): 1 here, so
    # both steps train on them.
    flags = ["--total-iters", "2", "--batch-size", "2", "--max-length", "128", "--max-prompt-length", "100",
             "--max-new-tokens", "8", "--gen-max-new-tokens", "8", "--dev-num", "4", "--eval-batch-size", "4",
             "--log-interval", "1", "--report-to", "none"]
    if "distillm" in script:
        flags += ["--init-threshold", "1.0"]
    proc = run_script(script, env, *flags)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((save / "run_summary.json").read_text())
    assert summary["steps"] == 2
    metrics = read_metrics(save)
    train = [m for m in metrics if "train/loss" in m]
    assert [m["step"] for m in train] == [1, 2]
    assert all(math.isfinite(v) for m in train for k, v in m.items() if k.startswith("train/"))
    assert all(("train/lm" in m) == corpus for m in train)  # the pretraining term exactly where a corpus is given
    # The schedule ran: ImitKD (--mixed-alpha 1) and DistiLLM at threshold 1 train on student answers only, GKD
    # draws each micro-batch's source.
    assert all("train/fresh_share" in m for m in train)
    if "gkd" not in script:
        assert all(m["train/data_share"] == 0 and m["train/gen_tokens"] > 0 for m in train)
    assert any("valid/rougeL" in m for m in metrics)
    args = json.loads((save / "args.json").read_text())
    assert (args["type"], args["student_gen"], args["kd_ratio"]) == (RELEASE[script][1], True, 1.0)
