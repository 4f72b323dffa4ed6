"""Picks the best checkpoint of a training run by validation Rouge-L and points ``<run>/best`` at it.

Uses the Rouge-L each checkpoint got during training (``metrics.jsonl``, written with --eval-gen); checkpoints
without one are scored now by generation on ``--data-dir``'s validation split (greedy unless ``--do-sample``; every
decoding option of the evaluation, ``--no-repeat-ngram-size`` and ``--repetition-penalty`` included). The choice is the
trainer's own rule (distill/summary.py ``is_better``): highest Rouge-L, the earliest step among equals, never a
non-finite score.

    python tools/select_best_checkpoint.py results/gpt2/train/sft/gpt2-base [--data-dir processed_data/dolly/full/gpt2]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import (GenerationConfig, InputError, add_dataclass_arguments, exit_on_input_error,  # noqa: E402
                            from_namespace)
from distill.summary import is_better  # noqa: E402
from distill.trainer import complete_checkpoints, write_best  # noqa: E402


def logged_rouge(run: Path) -> dict[int, float]:
    scores: dict[int, float] = {}
    path = run / "metrics.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            if "valid/rougeL" in rec:
                scores[int(rec["step"])] = float(rec["valid/rougeL"])
    return scores


def score_checkpoint(ckpt: Path, data_dir: str, gen: GenerationConfig, max_prompt_length: int) -> float:
    import torch

    from data_utils.datasets import InstructionDataset
    from distill.generation import generate_split
    from distill.metrics import compute_metrics
    from distill.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(str(ckpt))
    model = load_model(str(ckpt), merge_adapter=True)
    valid = InstructionDataset(data_dir, "valid")
    recs = generate_split(model, tokenizer, valid, gen, rank=0, world_size=1, device=torch.device("cpu"),
                          max_prompt_length=max_prompt_length)
    return compute_metrics([r["response"] for r in recs], [valid.references(r["index"]) for r in recs])["rougeL"]


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="training output directory (the --save of train_sft.py / train_distill.py)")
    parser.add_argument("--data-dir", help="processed data whose validation split scores unscored checkpoints")
    parser.add_argument("--max-prompt-length", type=int, default=256)
    add_dataclass_arguments(parser, GenerationConfig)
    args = parser.parse_args(argv)
    run = Path(args.run)
    steps = complete_checkpoints(run)
    if not steps:
        raise InputError(f"{run}: no complete checkpoint (<step>/trainer_state.json) — is this a training output dir?")
    scores = {s: v for s, v in logged_rouge(run).items() if s in steps}
    missing = [s for s in steps if s not in scores]
    if missing and args.data_dir is None:
        raise InputError(f"{run}: steps {missing} have no logged Rouge-L; pass --data-dir to score them")
    gen = from_namespace(GenerationConfig, args)
    for s in missing:
        scores[s] = score_checkpoint(run / str(s), args.data_dir, gen, args.max_prompt_length)
    for s in sorted(scores):
        print(f"step {s:>8}  Rouge-L {scores[s]:6.2f}")
    best: dict = {}
    for s in sorted(scores):
        candidate = {"step": s, "metric": "valid/rougeL", "value": scores[s], "path": str(run / str(s))}
        if is_better(candidate, best):
            best = candidate
    if not best:
        raise InputError(f"{run}: no checkpoint has a finite Rouge-L; nothing to choose")
    write_best(run, best)
    print(f"best: step {best['step']} (Rouge-L {best['value']:.2f}) -> {run / 'best'}")
    return best


if __name__ == "__main__":
    main()
