"""MiniLLM: the student minimises the reverse KL of sequence distributions to a frozen teacher by policy gradient
(distill/minillm.py; docs/minillm.md). The LMOps minillm flags, with its train_base_xl.sh values as defaults: rollouts
sampled from the teacher-mixed distribution, PPO with length-normalised rewards-to-go, the single-step reverse KL,
the pretraining term on --lm-data-dir; AdamW (0.9, 0.95), weight decay 1e-6, constant LR after 100 warm-up steps.

Example: python train_minillm.py --model-path results/gpt2/train/minillm_init/gpt2-base/best \
             --teacher-model-path results/gpt2/train/sft/gpt2-xlarge/best --data-dir processed_data/dolly/full/gpt2 \
             --lm-data-dir processed_data/openwebtext/full/gpt2 --save results/minillm
Launch scripts: scripts/<family>/minillm/*.sh.
"""
from distill.config import MINILLM_TRAIN_DEFAULTS, FeatureConfig, MiniLLMConfig
from distill.entry import run_training, teacher_of
from distill.inputs import check_generation_room, check_teacher_dir


def check_inputs(extra, data=None, train=None, gen=None):
    from distill.config import ConfigError

    cfg = extra[0]
    if gen is not None and (gen.top_k != 0 or gen.top_p != 1.0 or not gen.do_sample):
        # The PPO ratio needs the sampling distribution at every stored position; a filtered one (top-k/top-p)
        # would need its filter mask stored for all of them ([rollouts, length, vocab]).
        raise ConfigError("--top-k/--top-p: MiniLLM samples its rollouts from the full distribution at "
                          "--temperature; pass --do-sample --top-k 0 --top-p 1.0 (the LMOps launchers' values)")
    check_teacher_dir(cfg, data)
    if data is not None:
        check_generation_room(data, "to sample a response")
    if train is not None:
        from distill import preflight

        world = preflight.launch_world_size()
        if cfg.num_rollouts // world < train.batch_size:
            raise ConfigError(f"--num-rollouts {cfg.num_rollouts}: each of the {world} processes needs at least "
                              f"one micro-batch of rollouts (--batch-size {train.batch_size}); raise --num-rollouts "
                              f"to {train.batch_size * world} or more")


def make_objective(tokenizer, extra, env, gen=None):
    from distill.minillm import MiniLLMObjective

    from distill.feature_kd import with_features

    cfg = extra[0]
    objective = MiniLLMObjective(cfg, tokenizer, gen, len(tokenizer), env.rank, env.world_size)
    return with_features(objective, extra[1], tokenizer, gen) if len(extra) > 1 else objective


def main(argv=None):
    return run_training(__doc__, make_objective, extra_classes=[MiniLLMConfig, FeatureConfig], argv=argv, check_inputs=check_inputs,
                        teacher_of=teacher_of, defaults=MINILLM_TRAIN_DEFAULTS)


if __name__ == "__main__":
    main()
