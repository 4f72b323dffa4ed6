"""Shared set-up of the training entry points: parse the typed configs, check inputs, join the process group,
load the models, pick the objective, run the trainer. ``train_sft.py`` and ``train_distill.py`` are thin calls.

Only the configs are imported up front: ``--help`` and a bad flag or path answer before torch, transformers and
DeepSpeed load (seconds), and long before any model does."""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from distill.config import ConfigError, DataConfig, GenerationConfig, ModelConfig, TrainConfig, exit_on_input_error, parse_configs
from distill.inputs import check_max_length, check_model_dir

if TYPE_CHECKING:
    from distill import dist
    from distill.objectives import Objective

ObjectiveFactory = Callable[[Any, list[Any], "dist.DistEnv", GenerationConfig], "Objective"]


@exit_on_input_error
def run_training(description: str, make_objective: ObjectiveFactory, extra_classes: Sequence[type] = (),
                 argv: Optional[Sequence[str]] = None,
                 check_inputs: Optional[Callable[[list[Any], DataConfig, TrainConfig, GenerationConfig], None]] = None,
                 teacher_of: Optional[Callable[[list[Any]], Any]] = None,
                 defaults: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Parses ``ModelConfig, DataConfig, TrainConfig, GenerationConfig`` (+ ``extra_classes``), then trains.

    ``check_inputs(extra_configs, data_cfg, train_cfg, gen_cfg)`` checks the method's own inputs (e.g. the teacher directory) before
    anything loads; ``make_objective(tokenizer, extra_configs, env, gen)`` builds what a step computes (``gen``: the
    run's GenerationConfig); ``teacher_of(extra_configs)`` names the teacher (a distill.models.TeacherSpec), which
    the trainer loads and places.
    """
    model_cfg, data_cfg, train_cfg, gen_cfg, *extra = parse_configs(
        [ModelConfig, DataConfig, TrainConfig, GenerationConfig, *extra_classes], argv, description,
        defaults=defaults)
    # Inputs are checked before anything slow happens.
    check_model_dir(model_cfg.model_path, trust_remote_code=model_cfg.trust_remote_code)
    check_max_length(model_cfg.model_path, data_cfg.max_length)
    from data_utils.splits import require_split

    if data_cfg.data_dir is None:
        raise ConfigError("--data-dir is required (a processed directory, made by tools/process_data_dolly.py)")
    require_split(data_cfg.data_dir, "train")
    require_split(data_cfg.data_dir, "valid")
    if check_inputs is not None:
        check_inputs(extra, data_cfg, train_cfg, gen_cfg)
    # Everything else that needs no model, checked before any loads (distill/preflight.py): the DeepSpeed JSON and the
    # settings the flags override in it, the data files themselves, and the flags that do nothing with the others.
    from distill import preflight
    from distill.config import no_effect_warnings

    ds_raw = preflight.read_ds_config(train_cfg.deepspeed_config)
    notes = preflight.ds_config_warnings(ds_raw, train_cfg.deepspeed_config, train_cfg, preflight.launch_world_size())
    notes += no_effect_warnings(model_cfg, data_cfg, train_cfg, gen_cfg, *extra)
    preflight.check_training_splits(data_cfg.data_dir, data_cfg.dev_num,
                                    data_cfg.lm_data_dir if data_cfg.lm_coef > 0 else None)
    if preflight.is_main_process():
        # --save: made (with its parents) and a probe file written there, then left as it was — rank 0 writes the
        # run's files; one line naming the flag and the path if it cannot.
        preflight.check_writable_dir(train_cfg.save, "--save", keep=False)
        for line in notes:
            print(line, file=sys.stderr, flush=True)
    # One run per directory (distill/rundir.py): rank 0 checks --save against --resume / --overwrite and the stored
    # settings and locks it for the run's lifetime, before anything slow happens.
    from distill import rundir
    from distill.config import to_dict

    run_dir = rundir.claim(train_cfg, {**to_dict(model_cfg, data_cfg, train_cfg, gen_cfg), **to_dict(*extra)},
                           {**rundir.field_defaults([ModelConfig, DataConfig, TrainConfig, GenerationConfig,
                                                     *extra_classes]), **(defaults or {})})
    failed = True
    try:
        summary = _train(make_objective, model_cfg, data_cfg, train_cfg, gen_cfg, extra, notes,
                         teacher_of(extra) if teacher_of is not None else None)
        failed = False
        return summary
    finally:
        run_dir.release(failed=failed)


def _train(make_objective: ObjectiveFactory, model_cfg: ModelConfig, data_cfg: DataConfig, train_cfg: TrainConfig,
           gen_cfg: GenerationConfig, extra: list[Any], notes: Sequence[str] = (),
           teacher: Any = None) -> dict[str, Any]:
    """What follows the checks: the process group, the models, the objective, the loop. ``notes``: the warnings of
    the checks, already on stderr, for the run's log."""
    from distill import dist
    from distill.config import to_dict
    from distill.models import apply_lora, load_model, load_tokenizer
    from distill.trainer import Trainer

    env = dist.init_distributed()
    # Before any model loads: a precision this device only emulates is said in one line (it can cost ~60x).
    from distill import hardware
    from distill.trainer import load_ds_config

    hw = hardware.probe()
    precisions = hardware.run_precisions(load_ds_config(train_cfg.deepspeed_config, train_cfg, env.device), extra)
    hw_warnings = hardware.run_warnings(precisions, hw)
    if env.is_main:
        for warning in hw_warnings:
            print(warning, file=sys.stderr, flush=True)
    notes = [*notes, *hw_warnings]
    dist.seed_everything(train_cfg.seed)
    tokenizer = load_tokenizer(model_cfg.model_path, model_cfg.trust_remote_code)  # type: ignore[arg-type]
    if teacher is not None:  # its tokenizer and precision, before any model loads
        from distill.models import check_teacher

        check_teacher(teacher, tokenizer, env.device)
    # Data of another tokenizer is refused before the model loads (data_utils/processing.py, meta.json's fingerprint).
    from data_utils.processing import check_training_data

    notes = [*notes, *check_training_data(data_cfg, tokenizer, model_cfg.model_path,  # type: ignore[arg-type]
                                          warn=env.is_main)]
    model = load_model(model_cfg.model_path,  # type: ignore[arg-type]
                       trust_remote_code=model_cfg.trust_remote_code)
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if model_cfg.peft == "lora":
        model = apply_lora(model, model_cfg.peft_lora_r, model_cfg.peft_lora_alpha, model_cfg.peft_lora_dropout,
                           model_cfg.peft_path)
    objective = make_objective(tokenizer, extra, env, gen_cfg)
    trainer = Trainer(model=model, tokenizer=tokenizer, objective=objective, train=train_cfg, data=data_cfg,
                      gen=gen_cfg, model_cfg=model_cfg, env=env, extra_config=to_dict(*extra) if extra else None,
                      first_line=hardware.run_line(precisions, hw), warnings=notes, teacher=teacher)
    summary = trainer.fit()
    dist.finish()
    return summary


def teacher_of(extra: list[Any]) -> Any:
    """The teacher the trainer loads and places (distill/models.py load_teacher): that of the entry point's first
    extra config, a distill.config.TeacherConfig (DistillConfig, MiniLLMConfig)."""
    return extra[0].teacher_spec()
