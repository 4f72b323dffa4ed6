"""White-box knowledge distillation: the student learns from a frozen teacher's token distributions.

Loss = (1 - kd_ratio) * CE + kd_ratio * KD(--type) (+ lm_coef * LM on --lm-data-dir); with --seqkd on the teacher's
own answers, generated in each step (sequence-level KD); with --student-gen and --type mixed-<kind> (GKD, ImitKD) or
adaptive-<kind> (DistiLLM) also on the student's own answers (on-policy, distill/onpolicy.py). Everything else (DeepSpeed, evaluation, checkpoints, resume,
logging) is the SFT trainer's.

Example: python train_distill.py --model-path checkpoints/tiny-gpt2-student \
             --teacher-model-path results/quickstart/sft-teacher/best --data-dir processed_data/synth/full/gpt2 \
             --type fkl --kd-ratio 0.5 --save results/kd --epochs 3 --eval-gen
Launch scripts: scripts/<family>/kd/*.sh.
"""
from distill.config import DistillConfig
from distill.entry import run_training
from distill.inputs import check_max_length, check_model_dir


def check_inputs(extra, data=None, train=None, gen=None):
    from distill.config import ConfigError

    (cfg,) = extra
    check_model_dir(cfg.teacher_model_path, "--teacher-model-path")
    if data is not None:  # the teacher reads the same rows
        check_max_length(cfg.teacher_model_path, data.max_length, "--teacher-model-path")
    if cfg.on_policy and data is not None:
        # The data's prompts are at most its processing's --max-prompt-length (meta.json) long.
        from data_utils.processing import read_meta

        longest = (read_meta(data.data_dir) or {}).get("max_prompt_length", data.max_prompt_length)
        if data.max_length <= longest:
            raise ConfigError(f"--max-length {data.max_length}: leaves no room to generate after the data's prompts "
                              f"of up to {longest} tokens ({data.data_dir}/meta.json); raise --max-length above "
                              f"{longest}")
    if cfg.on_policy and train is not None and cfg.capacity < train.batch_size:
        raise ConfigError(f"--capacity {cfg.capacity}: the replay buffer must hold a micro-batch (--batch-size "
                          f"{train.batch_size}); raise --capacity to at least {train.batch_size}")


def teacher_of(extra):
    """The teacher the trainer loads and places (distill/models.py load_teacher)."""
    from distill.models import TeacherSpec

    (cfg,) = extra
    dtype = "fp16" if cfg.teacher_model_fp16 else "bf16" if cfg.teacher_model_bf16 else "fp32"
    return TeacherSpec(cfg.teacher_model_path, cfg.teacher_peft_path, dtype)


def make_objective(tokenizer, extra, env, gen=None):
    from distill.objectives import KDObjective, SeqKDObjective

    (cfg,) = extra
    if cfg.seqkd:  # the teacher's answers, generated in each step, as the training text
        return SeqKDObjective(cfg, len(tokenizer), tokenizer, cfg.step_generation(gen))
    if cfg.on_policy:  # GKD / ImitKD (mixed-<kind>), DistiLLM (adaptive-<kind>)
        from distill.onpolicy import OnPolicyKD

        return OnPolicyKD(cfg, len(tokenizer), tokenizer, cfg.step_generation(gen))
    return KDObjective(cfg, len(tokenizer))


def main(argv=None):
    return run_training(__doc__, make_objective, extra_classes=[DistillConfig], argv=argv, check_inputs=check_inputs,
                        teacher_of=teacher_of)


if __name__ == "__main__":
    main()
