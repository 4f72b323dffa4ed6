"""Supervised fine-tuning (full or LoRA) of a causal LM on processed instruction data, under DeepSpeed.

Example: python train_sft.py --model-path checkpoints/tiny-gpt2-student --data-dir processed_data/synth/full/gpt2 \
             --save results/sft --epochs 3 --eval-gen
Launch scripts: scripts/<family>/sft/*.sh.
"""
from distill.entry import run_training


def make_objective(tokenizer, extra, env, gen=None):
    from distill.objectives import SFTObjective

    return SFTObjective()


def main(argv=None):
    return run_training(__doc__, make_objective, argv=argv)


if __name__ == "__main__":
    main()
