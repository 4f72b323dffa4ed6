"""Evaluates a checkpoint by generation: Rouge-L and exact match per evaluation set and seed.

Example: python evaluate.py --model-path results/gpt2/train/sft/tiny-gpt2-teacher/best --eval-sets synth \
             --save results/gpt2/eval/teacher --seeds 10 20 30
Launch script: scripts/<family>/eval/run_eval.sh.
"""
from distill.evaluation import main

if __name__ == "__main__":
    main()
