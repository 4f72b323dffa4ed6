"""Knowledge distillation of large language models: the library behind train_sft.py, train_distill.py and evaluate.py."""
