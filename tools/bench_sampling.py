"""Tokens/s of MiniLLM's rollout sampler (distill/sampling.py) against Hugging Face ``generate`` sampling.

Both sample the same prompt batch at temperature 1 with no top-k/top-p for exactly ``--max-new-tokens`` tokens per
row (the loop without an EOS, generate with ``min_new_tokens``), so both do B x N token steps; each figure is the
best of ``--repeats`` runs after one warm-up (the cases taking turns, so a change of load hits them alike), all in
this process on ``--threads`` threads. Also printed: the loop in MiniLLM's setting (teacher-mixed, α = 0.2, the
teacher's log-probs of every token: the teacher runs each step too). No asserts: it reports.

    python tools/bench_sampling.py                                  # checkpoints/tiny-gpt2-{student,teacher}
    python tools/bench_sampling.py --student PATH --teacher PATH --batch-size 16 --max-new-tokens 128
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import distill  # noqa: E402,F401  (first: sets the CPU OpenMP wait policy before torch loads)
import torch  # noqa: E402
from transformers import GenerationConfig  # noqa: E402

from data_utils.datasets import left_padded  # noqa: E402
from distill.models import load_model, load_tokenizer  # noqa: E402
from distill.sampling import sample_rollouts  # noqa: E402


def tiny_pair(student: Path | None, teacher: Path | None) -> tuple[Path, Path]:
    """The given checkpoints, else checkpoints/tiny-gpt2-*, else a fresh random pair built from synthetic data."""
    if student is not None:
        return student, teacher or student
    default = REPO_ROOT / "checkpoints"
    if (default / "tiny-gpt2-student").is_dir() and (default / "tiny-gpt2-teacher").is_dir():
        return default / "tiny-gpt2-student", default / "tiny-gpt2-teacher"
    import json

    from tools.make_synthetic_data import generate
    from tools.make_tiny_models import checkpoint_dir, make_tiny_models

    out = Path(tempfile.mkdtemp(prefix="bench_sampling_"))
    train, _ = generate(200, 1, seed=1)
    corpus = out / "train.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in train), encoding="utf-8")
    make_tiny_models([corpus], ("gpt2",), vocab_size=1024, out_dir=out, seed=1)
    return checkpoint_dir(out, "gpt2", "student"), checkpoint_dir(out, "gpt2", "teacher")


def best_seconds(fns: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each function; the functions take turns within every repeat, so a change in the machine's
    load (other processes on its cores) hits them alike."""
    for fn in fns.values():
        fn()  # warm-up: allocator, thread pools
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--student", type=Path, default=None)
    ap.add_argument("--teacher", type=Path, default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--prompt-length", type=int, default=32, help="longest prompt; rows are 1/2 to all of it")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    student_path, teacher_path = tiny_pair(args.student, args.teacher)
    tok = load_tokenizer(str(student_path))  # the toolkit's safe loaders (no remote code, weights only)
    student = load_model(str(student_path)).eval()
    teacher = load_model(str(teacher_path)).eval()
    g = torch.Generator().manual_seed(args.seed)
    lengths = torch.randint(max(args.prompt_length // 2, 1), args.prompt_length + 1, (args.batch_size,), generator=g)
    rows = [torch.randint(0, len(tok), (int(n),), generator=g).tolist() for n in lengths]
    batch = left_padded(rows, tok.pad_token_id)
    b, n = args.batch_size, args.max_new_tokens
    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=n,
                              min_new_tokens=n, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    def loop(alpha: float = 0.0, with_teacher: bool = False) -> None:
        r = sample_rollouts(student, teacher if alpha > 0 or with_teacher else None, batch["input_ids"],
                            batch["attention_mask"], max_new_tokens=n, eos_token_id=None,
                            pad_token_id=tok.pad_token_id, vocab_size=len(tok), mix_alpha=alpha,
                            return_teacher_logprobs=with_teacher, generator=torch.Generator().manual_seed(1))
        assert r.tokens.shape == (b, n)

    def hf() -> None:
        torch.manual_seed(1)
        out = student.generate(**batch, generation_config=config)
        assert out.shape == (b, batch["input_ids"].shape[1] + n)

    with torch.no_grad():
        t = best_seconds({"loop": loop, "generate": hf, "mixed": lambda: loop(0.2, with_teacher=True)}, args.repeats)
    t_loop, t_hf, t_mixed = t["loop"], t["generate"], t["mixed"]
    tokens = b * n
    print(f"student {student_path} ({sum(p.numel() for p in student.parameters()):,} parameters), "
          f"teacher {teacher_path}; batch {b}, prompts up to {args.prompt_length} tokens, {n} new tokens per row, "
          f"{args.threads} thread(s), best of {args.repeats}")
    print(f"sample_rollouts (student, alpha 0)        {tokens / t_loop:10.1f} tokens/s")
    print(f"model.generate(do_sample=True)            {tokens / t_hf:10.1f} tokens/s")
    print(f"ratio loop / generate                     {t_hf / t_loop:10.2f}")
    print(f"sample_rollouts (alpha 0.2, teacher lps)  {tokens / t_mixed:10.1f} tokens/s (student + teacher each step)")


if __name__ == "__main__":
    main()
