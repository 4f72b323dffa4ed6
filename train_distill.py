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
from distill.config import DistillConfig, FeatureConfig
from distill.entry import run_training, teacher_of
from distill.inputs import check_generation_room, check_teacher_dir


def check_inputs(extra, data=None, train=None, gen=None):
    from distill.config import ConfigError

    cfg = extra[0]
    check_teacher_dir(cfg, data)
    if cfg.on_policy and data is not None:
        check_generation_room(data)
    if cfg.on_policy and train is not None and cfg.capacity < train.batch_size:
        raise ConfigError(f"--capacity {cfg.capacity}: the replay buffer must hold a micro-batch (--batch-size "
                          f"{train.batch_size}); raise --capacity to at least {train.batch_size}")


def make_objective(tokenizer, extra, env, gen=None):
    from distill.objectives import KDObjective, SeqKDObjective

    cfg = extra[0]
    if cfg.seqkd:  # the teacher's answers, generated in each step, as the training text
        objective = SeqKDObjective(cfg, len(tokenizer), tokenizer, cfg.step_generation(gen))
    elif cfg.on_policy:  # GKD / ImitKD (mixed-<kind>), DistiLLM (adaptive-<kind>)
        from distill.onpolicy import OnPolicyKD

        objective = OnPolicyKD(cfg, len(tokenizer), tokenizer, cfg.step_generation(gen))
    else:
        objective = KDObjective(cfg, len(tokenizer))
    if len(extra) > 1:  # the selective feature term (--method ...), on any of them
        from distill.feature_kd import with_features

        objective = with_features(objective, extra[1], tokenizer, cfg.step_generation(gen))
    return objective


def main(argv=None):
    return run_training(__doc__, make_objective, extra_classes=[DistillConfig, FeatureConfig], argv=argv,
                        check_inputs=check_inputs,
                        teacher_of=teacher_of)


if __name__ == "__main__":
    main()
