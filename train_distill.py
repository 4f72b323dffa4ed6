"""White-box knowledge distillation: the student learns from a frozen teacher's token distributions.

Loss = (1 - kd_ratio) * CE + kd_ratio * KD(--type) (+ lm_coef * LM on --lm-data-dir); everything else (DeepSpeed,
evaluation, checkpoints, resume, logging) is the SFT trainer's.

Example: python train_distill.py --model-path checkpoints/tiny-gpt2-student \
             --teacher-model-path results/quickstart/sft-teacher/best --data-dir processed_data/synth/full/gpt2 \
             --type fkl --kd-ratio 0.5 --save results/kd --epochs 3 --eval-gen
Launch scripts: scripts/<family>/kd/*.sh.
"""
from distill.config import DistillConfig, InputError
from distill.entry import run_training
from distill.inputs import check_model_dir


def check_inputs(extra):
    (cfg,) = extra
    check_model_dir(cfg.teacher_model_path, "--teacher-model-path")


def make_objective(tokenizer, extra, env):
    import torch

    from distill.models import check_tokenizers_agree, embedding_rows, load_model, load_tokenizer
    from distill.objectives import KDObjective

    (cfg,) = extra
    teacher_tok = load_tokenizer(cfg.teacher_model_path)
    check_tokenizers_agree(tokenizer, teacher_tok, "--model-path", cfg.teacher_model_path)
    dtype = torch.float16 if cfg.teacher_model_fp16 else torch.bfloat16 if cfg.teacher_model_bf16 else torch.float32
    if dtype == torch.float16 and env.device.type == "cpu":
        raise InputError("--teacher-model-fp16 needs a GPU; use --teacher-model-bf16 or fp32 on CPU")
    teacher = load_model(cfg.teacher_model_path, dtype, peft_path=cfg.teacher_peft_path, merge_adapter=True)
    teacher.to(env.device).eval().requires_grad_(False)
    vocab = len(tokenizer)
    if embedding_rows(teacher) < vocab:
        raise InputError(f"teacher {cfg.teacher_model_path} has {embedding_rows(teacher)} embedding rows, "
                         f"fewer than the tokenizer's {vocab} tokens")
    return KDObjective(teacher, cfg, vocab)


def main(argv=None):
    return run_training(__doc__, make_objective, extra_classes=[DistillConfig], argv=argv, check_inputs=check_inputs)


if __name__ == "__main__":
    main()
