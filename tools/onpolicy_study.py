"""On-policy distillation (GKD, DistiLLM, ImitKD) against SFT and off-policy KD on one teacher/student pair, over seeds.

Every arm trains from the same initial student with the same epochs, learning rate and batch (the flags after ``--``
go to every training run) and the release scripts' kd-ratio (``--kd-ratio``, 1.0 as the DistiLLM repository's
kd/gkd/imitkd/distillm scripts):

    sft       train_sft.py
    fkl, rkl  train_distill.py --type fkl | rkl (off-policy KD on the data)
    gkd       --type mixed-jsd --student-gen --mixed-alpha 0.5 --capacity C
    distillm  --type adaptive-sfkl --student-gen --init-threshold 0 --loss-eps 0.1 --capacity C
    imitkd    --type mixed-fkl --student-gen --mixed-alpha 1.0

The on-policy arms decode in the step with ``--gen-*`` (sampled, T 1, top-k 0, top-p 1, as released;
``--gen-max-new-tokens``). No arm has the pretraining LM term (the release's DistiLLM and ImitKD add one on
OpenWebText; give ``-- --lm-data-dir DIR`` to add it to every distillation arm). Every run validates once per epoch
(loss only: DistiLLM's threshold reads the validation CE; the others pay the same cost) and its *final* checkpoint
is scored: greedy Rouge-L and exact match on the validation split (evaluate.py), and the divergence on-policy
methods target, the student's reverse KL to the teacher on its own sampled answers to the validation prompts
(tools/eval_divergence.py --own-generations; ``--own-greedy``: greedy answers), beside the same reverse KL on the
reference answers (teacher-forced). The teacher's and the initial student's scores go beside them. Times come from
each run's run_summary.json (train_seconds, wall_seconds, prepare_seconds: the steps' generation), the on-policy
runs' share of micro-batches of student outputs and their answers' lengths from its metrics.jsonl.

Runs whose outputs exist are skipped and an interrupted training run continues (``--resume``), so an interrupted
study resumes; a run directory trained for another number of epochs is refused (use another ``--out``). ``--jobs N``
runs N at a time with cores/N threads each. Writes ``<out>/report.{md,json}`` and, with ``--doc``, the tables into
that file between ``<!-- KEY -->`` markers (``--doc-key``). The study of docs/onpolicy_results.md:

    python tools/onpolicy_study.py --epochs 10 --jobs 2 --teacher-bf16 --doc docs/onpolicy_results.md -- \\
        --batch-size 32 --lr 1e-3 --warmup-iters 20 --max-length 256 --length-pieces 4 --log-interval 10 \\
        --eval-batch-size 100 --deepspeed-config configs/deepspeed/ds_config_zero0_fp32.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from distill.config import InputError, exit_on_input_error  # noqa: E402
from study_common import (add_shared_args, category_rouge, check_paths, greedy_eval, mean_std,  # noqa: E402
                          own_generation_scores, run, train_once, write_report)

RUN_SUMMARY = "run_summary.json"  # distill/summary.py's name (not imported: that module is torch-free, but this
#                                   keeps the tool's --help and input checks free of the package's imports)

#: Each arm's entry point and method flags (the release scripts' --type, schedule and buffer); {capacity} is filled.
ARMS: dict[str, tuple[str, list[str]]] = {
    "sft": ("train_sft.py", []),
    "fkl": ("train_distill.py", ["--type", "fkl"]),
    "rkl": ("train_distill.py", ["--type", "rkl"]),
    "gkd": ("train_distill.py", ["--type", "mixed-jsd", "--student-gen", "--mixed-alpha", "0.5",
                                 "--capacity", "{capacity}"]),
    "distillm": ("train_distill.py", ["--type", "adaptive-sfkl", "--student-gen", "--init-threshold", "0",
                                      "--loss-eps", "0.1", "--capacity", "{capacity}"]),
    "imitkd": ("train_distill.py", ["--type", "mixed-fkl", "--student-gen", "--mixed-alpha", "1.0",
                                    "--capacity", "{capacity}"]),
}
ON_POLICY = ("gkd", "distillm", "imitkd")
LABELS = {"sft": "SFT", "fkl": "KD fkl", "rkl": "KD rkl", "gkd": "GKD (mixed-jsd, α 0.5)",
          "distillm": "DistiLLM (adaptive-sfkl)", "imitkd": "ImitKD (mixed-fkl, α 1)"}


def final_checkpoint(train: Path) -> Path:
    """The run's last checkpoint (every arm is scored at the end of its training, none picked on validation)."""
    summary = json.loads((train / RUN_SUMMARY).read_text())
    return train / str(summary["steps"])


def check_epochs(train: Path, epochs: int) -> None:
    """A run directory of this study trained (or training) for another number of epochs is refused: skipping it
    would report the wrong run, and resuming it would stretch its schedule."""
    args_json = train / "args.json"
    if args_json.is_file():
        stored = json.loads(args_json.read_text()).get("epochs")
        if stored is not None and int(stored) != epochs:
            raise InputError(f"{train} was trained for {stored} epochs, this study asks for --epochs {epochs}; pass "
                             f"another --out (or --epochs {stored})")


def onpolicy_stats(train: Path) -> dict[str, Optional[float]]:
    """From an on-policy run's metrics.jsonl (train rows are means over their log interval, weighted here by the
    steps each covers): the share of micro-batches of fresh student outputs and of replayed ones, the mean length
    of a fresh answer over the run, in the first and in the last logged interval, and DistiLLM's last threshold."""
    path = train / "metrics.jsonl"
    args = json.loads((train / "args.json").read_text())
    rows_per_micro = int(args.get("batch_size", 1))
    micro = int(args.get("gradient_accumulation_steps", 1))
    out: dict[str, Optional[float]] = {"fresh_share": None, "replay_share": None, "answer_tokens": None,
                                       "answer_tokens_first": None, "answer_tokens_last": None, "threshold": None}
    if not path.is_file():
        return out
    rows, prev = [], 0
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if "train/fresh_share" in r:
            rows.append((r["step"] - prev, r))
            prev = r["step"]
    steps = sum(w for w, _ in rows)
    if not steps:
        return out

    def answers(w_rows: list[tuple[int, dict]]) -> Optional[float]:
        fresh_rows = sum(w * r["train/fresh_share"] * micro * rows_per_micro for w, r in w_rows)
        tokens = sum(w * r.get("train/gen_tokens", 0.0) for w, r in w_rows)
        return tokens / fresh_rows if fresh_rows else None

    out["fresh_share"] = sum(w * r["train/fresh_share"] for w, r in rows) / steps
    out["replay_share"] = sum(w * r.get("train/replay_share", 0.0) for w, r in rows) / steps
    out["answer_tokens"] = answers(rows)
    with_fresh = [(w, r) for w, r in rows if r["train/fresh_share"] > 0]
    if with_fresh:
        out["answer_tokens_first"], out["answer_tokens_last"] = answers(with_fresh[:1]), answers(with_fresh[-1:])
    thresholds = [r["train/threshold"] for _, r in rows if "train/threshold" in r]
    out["threshold"] = thresholds[-1] if thresholds else None
    return out


def fmt(x: Optional[float], spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def mean_or_none(xs: list[Optional[float]]) -> Optional[float]:
    return None if not xs or any(x is None for x in xs) else statistics.fmean(xs)  # type: ignore[arg-type]


def render(results: dict[str, dict[int, dict[str, Any]]], refs: dict[str, dict[str, Any]], setup: str,
           cats: dict[str, dict[str, float]]) -> str:
    """The report: one row per arm (mean ± std over seeds; times as means), the teacher's and the initial student's
    rows; the on-policy runs' schedules; Rouge-L per task category."""
    lines = [setup, "",
             "| model | Rouge-L | exact match | train s | wall s | generating (prepare / train s) | "
             "RKL on own answers | RKL on references | own answer tokens |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, ref in refs.items():
        lines.append(f"| {name} | {ref['rougeL']:.2f} | {ref['exact_match']:.2f} | — | — | — | "
                     f"{fmt(ref.get('own_rkl'), '.4f')} | {fmt(ref.get('tf_rkl'), '.4f')} | "
                     f"{fmt(ref.get('own_tokens'), '.1f')} |")
    for arm, per_seed in results.items():
        rs = list(per_seed.values())
        prep = [r["prepare_s"] for r in rs]
        share = (None if any(p is None for p in prep)
                 else statistics.fmean(p / r["train_s"] for p, r in zip(prep, rs)))  # type: ignore[operator]
        lines.append(f"| {LABELS.get(arm, arm)} | {mean_std([r['rougeL'] for r in rs])} | "
                     f"{mean_std([r['exact_match'] for r in rs])} | {statistics.fmean(r['train_s'] for r in rs):.0f} | "
                     f"{statistics.fmean(r['wall_s'] for r in rs):.0f} | {fmt(share, '.1%')} | "
                     f"{mean_std([r['own_rkl'] for r in rs], '.4f')} | {mean_std([r['tf_rkl'] for r in rs], '.4f')} | "
                     f"{statistics.fmean(r['own_tokens'] for r in rs):.1f} |")
    on = [a for a in results if a in ON_POLICY]
    if on:
        lines += ["", "On-policy schedules (mean over seeds; from each run's metrics.jsonl): share of micro-batches "
                      "that were fresh student outputs and replayed ones, the mean length of a fresh answer in "
                      "training (tokens, its EOS included where it ended) over the run and in its first and last "
                      "logged interval, and "
                      "DistiLLM's threshold at the end.", "",
                  "| arm | fresh | replayed | answer tokens | first interval | last interval | threshold |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for arm in on:
            st = [r["onpolicy"] for r in results[arm].values()]
            m = {k: mean_or_none([s[k] for s in st]) for k in st[0]}
            lines.append(f"| {LABELS[arm]} | {fmt(m['fresh_share'], '.1%')} | {fmt(m['replay_share'], '.1%')} | "
                         f"{fmt(m['answer_tokens'], '.1f')} | {fmt(m['answer_tokens_first'], '.1f')} | "
                         f"{fmt(m['answer_tokens_last'], '.1f')} | {fmt(m['threshold'], '.2f')} |")
    if cats and not set(cats.get("teacher", {})) <= {"all"}:
        names = list(cats)
        lines += ["", "Rouge-L by task category (mean over seeds; teacher and initial student: one greedy run):", "",
                  "| category | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
        for c in sorted(cats["teacher"]):
            lines.append(f"| {c} | " + " | ".join(f"{cats[n].get(c, float('nan')):.1f}" for n in names) + " |")
    return "\n".join(lines) + "\n"


@exit_on_input_error
def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="results/teacher_e20/best")
    parser.add_argument("--student", default="checkpoints/tiny-gpt2-student", help="initial student checkpoint")
    parser.add_argument("--data-dir", default="processed_data/synth/full/gpt2")
    parser.add_argument("--out", default="results/onpolicy_study")
    parser.add_argument("--arms", nargs="+", default=list(ARMS), help=f"any of {', '.join(ARMS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=10, help="every arm's epochs (a budget choice)")
    parser.add_argument("--kd-ratio", type=float, default=1.0,
                        help="the distillation arms' --kd-ratio (1.0: the DistiLLM repository's scripts)")
    parser.add_argument("--capacity", type=int, default=1000, help="replay buffer of the on-policy arms")
    parser.add_argument("--gen-max-new-tokens", type=int,
                        help="most tokens of an answer generated in a training step (default: --max-new-tokens)")
    parser.add_argument("--own-greedy", action="store_true",
                        help="score the own-answer divergence on greedy answers (default: sampled at T 1)")
    parser.add_argument("--own-seed", type=int, default=10, help="seed of the sampled answers of the metric")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once; each gets cores/jobs threads")
    parser.add_argument("--doc-key", default="onpolicy-study", help="--doc markers: <!-- KEY --> ... <!-- /KEY -->")
    add_shared_args(parser, "<!-- onpolicy-study --> (--doc-key)")
    args = parser.parse_args(argv)
    bad = [a for a in args.arms if a not in ARMS]
    if bad:
        raise InputError(f"--arms: unknown {bad}; valid: {', '.join(ARMS)}")
    for flag, value, low in (("--jobs", args.jobs, 1), ("--epochs", args.epochs, 1), ("--capacity", args.capacity, 1),
                             ("--max-new-tokens", args.max_new_tokens, 1),
                             ("--gen-max-new-tokens", args.gen_max_new_tokens or 1, 1)):
        if value < low:
            raise InputError(f"{flag} {value}: must be at least {low}")
    if not 0.0 <= args.kd_ratio <= 1.0:
        raise InputError(f"--kd-ratio {args.kd_ratio}: must be in [0, 1]")
    if len(set(args.seeds)) != len(args.seeds):
        raise InputError(f"--seeds {' '.join(map(str, args.seeds))}: a seed is repeated")
    # The study sets these per run; one given after -- would silently override the arm's own (or the resume logic).
    owned = {"--type", "--student-gen", "--mixed-alpha", "--capacity", "--init-threshold", "--loss-eps", "--kd-ratio",
             "--seed", "--save", "--epochs", "--total-iters", "--model-path", "--teacher-model-path", "--data-dir",
             "--eval-interval", "--eval-gen", "--overwrite"}
    clash = sorted({a.split("=")[0] for a in args.train_args} & owned)
    if clash:
        raise InputError(f"{', '.join(clash)} after --: the study sets it for each run (use its own flags: --epochs, "
                         f"--seeds, --kd-ratio, --capacity, --teacher, --student, --data-dir)")
    check_paths(args.teacher, args.student, args.data_dir)
    out = Path(args.out)
    for arm in args.arms:
        for seed in args.seeds:
            check_epochs(out / arm / str(seed) / "train", args.epochs)

    py = sys.executable
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    gen_new = args.gen_max_new_tokens or args.max_new_tokens
    common = ["--data-dir", args.data_dir, "--epochs", str(args.epochs), "--no-eval-gen", "--eval-interval", "-1",
              "--max-new-tokens", str(args.max_new_tokens), *args.train_args]
    teacher_flags = ["--teacher-model-path", args.teacher] + (["--teacher-model-bf16"] if args.teacher_bf16 else [])
    in_step = ["--gen-do-sample", "--gen-temperature", "1", "--gen-top-k", "0", "--gen-top-p", "1",
               "--gen-max-new-tokens", str(gen_new)]

    def train_cmd(arm: str) -> list[str]:
        entry, flags = ARMS[arm]
        cmd = [py, entry, "--model-path", args.student, *[f.format(capacity=args.capacity) for f in flags]]
        if entry == "train_distill.py":
            cmd += [*teacher_flags, "--kd-ratio", str(args.kd_ratio)]
        if arm in ON_POLICY:
            cmd += in_step
        return [*cmd, *common]

    own = ["--own-generations", "--max-new-tokens", str(args.max_new_tokens), "--gen-batch-size", "100",
           "--gen-seed", str(args.own_seed)] + (["--no-gen-do-sample"] if args.own_greedy else [])

    def score(model: str, d: Path, teacher_forced: bool = True) -> None:
        """Greedy Rouge-L and the own-answer divergence of one model, each skipped when its output exists."""
        greedy_eval(model, args.data_dir, d, args.max_new_tokens, threads)
        div = d / "divergence.json"
        if not div.exists() or "own_generations" not in json.loads(div.read_text()):
            run([py, "tools/eval_divergence.py", "--student", model, "--teacher", args.teacher, "--data-dir",
                 args.data_dir, "--kinds", *(["rkl"] if teacher_forced else []), *own, "--out", str(div)],
                d / "divergence.log", threads)

    def one(arm: str, seed: int) -> None:
        d = out / arm / str(seed)
        train_once([*train_cmd(arm), "--seed", str(seed)], d, threads)
        score(str(final_checkpoint(d / "train")), d)

    def references() -> None:
        score(args.teacher, out / "teacher")
        score(args.student, out / "initial")

    tasks = [(arm, seed) for seed in args.seeds for arm in args.arms]  # seed-major: whole seeds done first
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(references)] + [pool.submit(one, arm, seed) for arm, seed in tasks]
        for f in futures:
            f.result()

    results: dict[str, dict[int, dict[str, Any]]] = {}
    for arm, seed in tasks:
        d = out / arm / str(seed)
        summary = json.loads((d / "train" / RUN_SUMMARY).read_text())
        results.setdefault(arm, {})[seed] = {
            **own_generation_scores(d), "train_s": summary["train_seconds"], "wall_s": summary["wall_seconds"],
            "prepare_s": summary.get("prepare_seconds"), "tokens": summary.get("tokens"),
            "steps": summary["steps"], "onpolicy": onpolicy_stats(d / "train") if arm in ON_POLICY else None,
            "process_wall_s": (json.loads((d / "process_wall.json").read_text())["wall_seconds"]
                               if (d / "process_wall.json").exists() else None)}
    refs = {f"teacher `{args.teacher}`": own_generation_scores(out / "teacher"),
            f"initial student `{args.student}`": own_generation_scores(out / "initial")}
    cats = {"teacher": category_rouge([out / "teacher" / "eval"]),
            "initial": category_rouge([out / "initial" / "eval"])}
    cats.update({arm: category_rouge([out / arm / str(s) / "eval" for s in per_seed])
                 for arm, per_seed in results.items()})
    steps = next(iter(next(iter(results.values())).values()))["steps"]
    setup = (f"Data `{args.data_dir}`; teacher `{args.teacher}`; every arm from `{args.student}`, {args.epochs} "
             f"epochs ({steps} steps), seeds {args.seeds}, kd-ratio {args.kd_ratio:g} for the distillation arms, "
             f"replay buffer {args.capacity}, in-step answers sampled at T 1 (top-k 0, top-p 1) up to {gen_new} "
             f"tokens; no pretraining LM term. Flags for every run, last: `{' '.join(args.train_args)}`. Scores of "
             f"each run's final checkpoint: Rouge-L and exact match greedy on the validation split (up to "
             f"{args.max_new_tokens} tokens); RKL on own answers: token mean of KL(q_student ‖ p_teacher) over the "
             f"positions of the student's own {'greedy' if args.own_greedy else f'sampled (T 1, seed {args.own_seed})'}"
             f" answers to the validation prompts (EOS position included where it ended); RKL on references: the "
             f"same on the reference answers; own answer tokens: their mean length (without EOS). Train s / wall s: run_summary.json"
             f" (means over seeds; {args.jobs} run(s) at a time); generating: prepare_seconds / train_seconds.")
    table = render(results, refs, setup, cats)
    write_report(out, table, {"setup": setup, "runs": results, "references": refs, "categories": cats,
                              "args": {k: v for k, v in vars(args).items()}}, args.doc, args.doc_key)
    return results


if __name__ == "__main__":
    main()
