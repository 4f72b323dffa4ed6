"""Shared set-up of the training entry points: parse the typed configs, check inputs, join the process group,
load the models, pick the objective, run the trainer. ``train_sft.py`` and ``train_distill.py`` are thin calls."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from distill import dist
from distill.config import ConfigError, DataConfig, GenerationConfig, ModelConfig, TrainConfig, exit_on_input_error, parse_configs
from distill.models import apply_lora, check_model_dir, load_model, load_tokenizer
from distill.objectives import Objective

ObjectiveFactory = Callable[[Any, list[Any], dist.DistEnv], Objective]


@exit_on_input_error
def run_training(description: str, make_objective: ObjectiveFactory, extra_classes: Sequence[type] = (),
                 argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Parses ``ModelConfig, DataConfig, TrainConfig, GenerationConfig`` (+ ``extra_classes``), then trains.

    ``make_objective(tokenizer, extra_configs, env)`` builds what a step computes (and loads a teacher if it needs one).
    """
    model_cfg, data_cfg, train_cfg, gen_cfg, *extra = parse_configs(
        [ModelConfig, DataConfig, TrainConfig, GenerationConfig, *extra_classes], argv, description)
    # Inputs are checked before anything slow happens.
    check_model_dir(model_cfg.model_path)
    from data_utils.datasets import require_split

    if data_cfg.data_dir is None:
        raise ConfigError("--data-dir is required (a processed directory, made by tools/process_data_dolly.py)")
    require_split(data_cfg.data_dir, "train")
    require_split(data_cfg.data_dir, "valid")
    env = dist.init_distributed()
    dist.seed_everything(train_cfg.seed)
    tokenizer = load_tokenizer(model_cfg.model_path)  # type: ignore[arg-type]
    model = load_model(model_cfg.model_path)  # type: ignore[arg-type]
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if model_cfg.peft == "lora":
        model = apply_lora(model, model_cfg.peft_lora_r, model_cfg.peft_lora_alpha, model_cfg.peft_lora_dropout,
                           model_cfg.peft_path)
    objective = make_objective(tokenizer, extra, env)
    from distill.config import to_dict
    from distill.trainer import Trainer

    trainer = Trainer(model=model, tokenizer=tokenizer, objective=objective, train=train_cfg, data=data_cfg,
                      gen=gen_cfg, model_cfg=model_cfg, env=env, extra_config=to_dict(*extra) if extra else None)
    return trainer.fit()
