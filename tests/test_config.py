"""Typed configs -> command line (distill/config.py): flag names and kinds, defaults, and one-line validation errors."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import pytest

from distill.config import (ConfigError, DataConfig, GenerationConfig, InputError, ModelConfig, TrainConfig, _check,
                            _opt, add_dataclass_arguments, exit_on_input_error, parse_configs, to_dict)

REPO_ROOT = Path(__file__).resolve().parents[1]
ALL = [ModelConfig, DataConfig, TrainConfig, GenerationConfig]
MINIMAL = ["--save", "out", "--total-iters", "3"]


@dataclass
class Demo:
    learning_rate: float = _opt(0.1, "Step size.")
    use_cache: bool = _opt(True, "Cache keys and values.")
    mode: Literal["fast", "slow"] = _opt("fast", "Speed.")
    sizes: list[int] = _opt([1, 2], "Sizes.")
    name: Optional[str] = _opt(None, "A name.")
    count: Optional[int] = _opt(None, "A count.", aliases=["--the_count"])

    def __post_init__(self) -> None:
        _check(self.learning_rate > 0, "learning_rate", "must be > 0")


def demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False)
    add_dataclass_arguments(parser, Demo)
    return parser


def option_strings(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    return {a.dest: a.option_strings for a in parser._actions if a.dest != "help"}


def test_flags_are_kebab_case_with_negatable_bools() -> None:
    opts = option_strings(demo_parser())
    assert opts == {"learning_rate": ["--learning-rate"], "use_cache": ["--use-cache", "--no-use-cache"],
                    "mode": ["--mode"], "sizes": ["--sizes"], "name": ["--name"], "count": ["--count", "--the_count"]}


def test_defaults_and_parsed_types() -> None:
    parser = demo_parser()
    d = Demo(**vars(parser.parse_args([])))
    assert d == Demo() and d.sizes == [1, 2] and d.use_cache is True and d.name is None
    ns = parser.parse_args(["--learning-rate", "0.5", "--no-use-cache", "--mode", "slow", "--sizes", "3", "4", "5",
                            "--name", "x", "--the_count", "7"])
    d = Demo(**vars(ns))
    assert (d.learning_rate, d.use_cache, d.mode, d.sizes, d.name, d.count) == (0.5, False, "slow", [3, 4, 5], "x", 7)
    assert Demo(**vars(parser.parse_args(["--no-use-cache", "--use-cache"]))).use_cache is True  # last one wins


def test_list_defaults_are_not_shared() -> None:
    a, b = Demo(), Demo()
    a.sizes.append(9)
    assert b.sizes == [1, 2]
    assert demo_parser().parse_args([]).sizes == [1, 2]


@pytest.mark.parametrize("argv", [
    ["--mode", "medium"],         # not a Literal choice
    ["--sizes"],                  # nargs="+" needs a value
    ["--sizes", "a"],             # element type int
    ["--learning_rate", "0.2"],   # snake_case is not a flag (no alias)
    ["--learn", "0.2"],           # no abbreviations
])
def test_bad_command_lines_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        demo_parser().parse_args(argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_every_real_field_becomes_a_kebab_flag() -> None:
    parser = argparse.ArgumentParser()
    for cls in ALL:
        add_dataclass_arguments(parser, cls)
    opts = option_strings(parser)
    for cls in ALL:
        for f in dataclasses.fields(cls):
            assert "--" + f.name.replace("_", "-") in opts[f.name], f.name
    assert opts["eval_gen"] == ["--eval-gen", "--no-eval-gen"]
    assert "--deepspeed_config" in opts["deepspeed_config"]  # the launcher-style spelling is kept as an alias
    choices = {a.dest: a.choices for a in parser._actions}
    assert choices["lr_schedule"] == ("constant", "cosine") and choices["peft"] == ("lora",)


def test_parse_configs_builds_each_class() -> None:
    ds = str(REPO_ROOT / "configs" / "deepspeed" / "ds_config_zero0_fp32.json")
    model, data, train, gen = parse_configs(ALL, MINIMAL + ["--lr", "1e-3", "--lr-schedule", "constant", "--peft",
                                                            "lora", "--max-new-tokens", "8", "--eval-gen",
                                                            "--deepspeed_config", ds])
    assert model.peft == "lora" and train.lr == 1e-3 and train.lr_schedule == "constant" and gen.max_new_tokens == 8
    assert train.eval_gen is True and train.deepspeed_config == ds
    assert data.max_length == DataConfig().max_length
    merged = to_dict(model, train)
    assert merged["peft"] == "lora" and merged["total_iters"] == 3


@pytest.mark.parametrize("argv, flag", [
    (["--total-iters", "3"], "--save"),
    (["--save", "out"], "--epochs"),                        # neither --epochs nor --total-iters
    (MINIMAL + ["--lr", "0"], "--lr"),
    (MINIMAL + ["--batch-size", "0"], "--batch-size"),
    (["--save", "out", "--epochs", "0"], "--epochs"),
    (MINIMAL + ["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps"),
    (MINIMAL + ["--keep-optimizer-states", "0"], "--keep-optimizer-states"),
    (MINIMAL + ["--warmup-iters", "-1"], "--warmup-iters"),
    (MINIMAL + ["--deepspeed-config", "no/such/ds.json"], "--deepspeed-config"),
    (MINIMAL + ["--peft-path", "adapter"], "--peft-path"),  # needs --peft lora
    (MINIMAL + ["--peft-lora-r", "0"], "--peft-lora-r"),
    (MINIMAL + ["--lm-coef", "0.5"], "--lm-coef"),          # needs --lm-data-dir
    (MINIMAL + ["--max-length", "1"], "--max-length"),
    (MINIMAL + ["--top-p", "0"], "--top-p"),
    (MINIMAL + ["--temperature", "0"], "--temperature"),
    (MINIMAL + ["--max-new-tokens", "0"], "--max-new-tokens"),
    (MINIMAL + ["--length-pieces", "0"], "--length-pieces"),
    (MINIMAL + ["--progress-interval", "0"], "--progress-interval"),
])
def test_validation_errors_name_the_flag_in_one_line(argv: list[str], flag: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse_configs(ALL, argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}:"), err
    if flag == "--deepspeed-config":
        assert "no/such/ds.json" in err and "configs/deepspeed" in err


def test_config_error_is_an_input_error() -> None:
    with pytest.raises(InputError, match="^--learning-rate: must be > 0$"):
        Demo(learning_rate=0)
    assert issubclass(ConfigError, InputError) and issubclass(InputError, ValueError)


def test_exit_on_input_error(capsys: pytest.CaptureFixture[str]) -> None:
    @exit_on_input_error
    def bad_input() -> None:
        raise InputError("data.jsonl: line 3 is not JSON; fix the line")

    @exit_on_input_error
    def missing_file() -> None:
        raise FileNotFoundError("ckpt/config.json not found; run tools/make_tiny_models.py")

    @exit_on_input_error
    def bug() -> None:
        raise RuntimeError("a bug is not an input error")

    for fn, message in ((bad_input, "data.jsonl: line 3 is not JSON; fix the line"),
                        (missing_file, "ckpt/config.json not found; run tools/make_tiny_models.py")):
        with pytest.raises(SystemExit) as e:
            fn()
        assert e.value.code == 2
        assert capsys.readouterr().err == f"error: {message}\n"
    with pytest.raises(RuntimeError):
        bug()


@exit_on_input_error
def _returns(x: int) -> int:
    return x + 1


def test_exit_on_input_error_passes_results_through() -> None:
    assert _returns(1) == 2 and _returns.__name__ == "_returns"


# ------------------------------------------------------------------------------------------------------------------
# Flags without effect: one warning each, only for a value the user changed from the field default.


def _warned(*configs: object) -> list[str]:
    from distill.config import no_effect_warnings

    return no_effect_warnings(*configs)


def _kd(**kw: object):
    from distill.config import DistillConfig

    return DistillConfig(teacher_model_path="teacher", **kw)  # type: ignore[arg-type]


TRAIN = dict(save="out", total_iters=3)


@pytest.mark.parametrize("configs, expected", [
    ((_kd(type="rkl", temperature_kld=2.0),), "--temperature-kld 2 has no effect: --type rkl has no temperature; "
                                              "its temperature twin is --type trkl"),
    ((_kd(type="kd", temperature_kld=0.5),), "--type kd has no temperature; its temperature twin is --type tfkl"),
    ((_kd(type="tfkl", skew_alpha=0.3),), "--skew-alpha 0.3 has no effect: only the skew kinds (sfkl, srkl, tsfkl, "
                                          "tsrkl) use it, not --type tfkl"),
    ((_kd(type="sfkl", jsd_beta=0.5),), "--jsd-beta 0.5 has no effect: only jsd and tjsd use it, not --type sfkl"),
    ((_kd(token_score="kl"),), "--token-score kl has no effect: --token-ratio 1 keeps every response token"),
    ((_kd(kd_ratio=0.0),), "--kd-ratio 0 gives the KD term weight 0: the teacher runs for nothing"),
    ((ModelConfig(peft_lora_r=16),), "--peft-lora-r 16 has no effect: no LoRA adapter is trained without --peft lora"),
    ((ModelConfig(peft="lora", peft_path="adapter", peft_lora_dropout=0.0),),
     "--peft-lora-dropout 0 has no effect: --peft-path adapter continues an adapter, which keeps its own rank"),
    ((DataConfig(lm_data_dir="corpus", lm_coef=0.0),),
     "--lm-data-dir corpus has no effect: its language-modelling loss has weight --lm-coef 0"),
    ((DataConfig(num_workers=4),), "--num-workers 4 has no effect"),
    ((TrainConfig(**TRAIN, lr_schedule="constant", lr_min=1e-5),),
     "--lr-min 1e-05 has no effect: --lr-schedule constant keeps --lr"),
    ((TrainConfig(**TRAIN, wandb_project="mine"),), "--wandb-project mine has no effect: metrics go to tensorboard"),
    ((GenerationConfig(top_p=0.9),), "--top-p 0.9 has no effect: decoding is greedy without --do-sample"),
])
def test_flags_without_effect_warn_in_one_line(configs: tuple, expected: str) -> None:
    warnings = _warned(*configs)
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and expected in warnings[0], warnings
    assert "\n" not in warnings[0]


def test_flags_with_effect_or_at_their_defaults_are_silent() -> None:
    assert _warned(ModelConfig(), DataConfig(), TrainConfig(**TRAIN), GenerationConfig(), _kd()) == []
    # Set explicitly to the default: indistinguishable from leaving it out, and harmless.
    assert _warned(_kd(type="fkl", temperature_kld=1.0, skew_alpha=0.1, jsd_beta=0.9), GenerationConfig(top_k=0)) == []
    assert _warned(_kd(type="tfkl", temperature_kld=2.0), _kd(type="ttvdf", temperature_kld=2.0),
                   _kd(type="tsrkl", skew_alpha=0.3), _kd(type="sfkl", skew_alpha=0.3), _kd(type="tjsd", jsd_beta=0.5),
                   _kd(token_ratio=0.5, token_score="kl"), _kd(kd_ratio=1.0),
                   ModelConfig(peft="lora", peft_lora_r=16), DataConfig(lm_data_dir="corpus", lm_coef=0.1),
                   TrainConfig(**TRAIN, lr_min=1e-5), TrainConfig(**TRAIN, report_to="wandb", wandb_project="mine"),
                   GenerationConfig(do_sample=True, top_k=5, top_p=0.9, temperature=0.7)) == []


def test_kd_ratio_0_warns_once_for_all_kd_settings() -> None:
    warnings = _warned(_kd(kd_ratio=0.0, temperature_kld=3.0, jsd_beta=0.5, token_score="kl"))
    assert len(warnings) == 1 and "--kd-ratio 0" in warnings[0] and "train_sft.py" in warnings[0]


def test_lm_coef_defaults_to_1_with_a_corpus() -> None:
    """As in the MiniLLM and DistiLLM code: --lm-data-dir alone trains on it with weight 1 (it used to do nothing)."""
    assert DataConfig(lm_data_dir="corpus").lm_coef == 1.0
    assert DataConfig().lm_coef == 0.0
    assert DataConfig(lm_data_dir="corpus", lm_coef=0.3).lm_coef == 0.3
    assert _warned(DataConfig(lm_data_dir="corpus")) == []
