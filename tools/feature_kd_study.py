"""Selective feature distillation over attribution methods, on KD and on MiniLLM, over seeds (docs/feature_kd.md).

Per seed, every run continues from that seed's *initialisation* (an SFT run of ``--student``, best checkpoint by
validation loss: tools/minillm_study.py's, which MiniLLM needs and KD shares so the two objectives start alike). The
runs cross two objectives with five feature settings:

    objective   kd: train_distill.py --type fkl --kd-ratio 1.0      minillm: train_minillm.py (the release's defaults)
    feature     none (no feature term), or the term with --method grad | integrated_grads | max_activations | random

Both objectives use MiniLLM's optimiser and schedule (AdamW (0.9, 0.95), weight decay 1e-6, constant after 100 warm-up
steps, batch 16) for ``--total-iters`` optimizer steps at ``--lr``; the feature runs add ``--feature-args`` (the
layers, units and loss weights, the same for every method) with the arm's ``--method`` and ``--selection-refresh``.
Each run's final checkpoint is scored greedily on the validation split (evaluate.py: Rouge-L, exact match); the
feature loss is read from metrics.jsonl (first and last logged training interval, and the final validation), the
attribution time from the same rows (``train/attribution_seconds``: a mean per step over each log interval), and the
time from run_summary.json; the overhead of a method is its run's train seconds over the same seed's run without the
feature term, minus 1.

Timing runs (``--timing-steps`` N > 0): for the first seed, each objective and method once more for N steps with the
selection refreshed every step, as the original does: seconds per step and the attribution's share of it. Their
MiniLLM runs fill a store of N x batch / 4 rollouts (4 PPO epochs), so the rollout share of a step is that of the
full runs.

A run with run_summary.json is not redone, an interrupted one continues (``--resume``), a run directory made with
other settings is refused. ``--init-from DIR`` reuses finished SFT runs ``DIR/<seed>/train``. ``--jobs N`` runs N
at a time with cores/N threads each. Writes ``<out>/report.{md,json}`` and, with ``--doc``, the tables into that
file between ``<!-- feature-kd-study -->`` markers. The study of docs/feature_kd.md:

    python tools/feature_kd_study.py --jobs 2 --init-from results/sft_init --doc docs/feature_kd.md -- \\
        --log-interval 8 --report-to none --eval-batch-size 100 \\
        --deepspeed-config configs/deepspeed/ds_config_zero0_fp32.json
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from distill.config import MINILLM_TRAIN_DEFAULTS, InputError, MiniLLMConfig, exit_on_input_error  # noqa: E402
from study_common import (RUN_SUMMARY, add_init_args, add_pair_args, add_shared_args, check_init_args,  # noqa: E402
                          check_paths, check_run_dir, data_lengths, fmt, greedy_eval, init_checkpoint,
                          initialisations, mean_std, minillm_optimiser, sft_initialiser, train_once, write_report)

OBJECTIVES = ("kd", "minillm")
METHODS = ("none", "grad", "integrated_grads", "max_activations", "random")
PPO_EPOCHS = MiniLLMConfig.ppo_epochs  # the default: a store of R rollouts lasts R / batch x PPO_EPOCHS steps
#: The tiny pair: student 2 x 64 (MLP 256), teacher 4 x 192 (MLP 768). Residual units, as the release's command
#: (--hidden); layers at the same relative depth (the final states after the last norm, and the student's middle
#: [after block 1 of 2] with the teacher's [after block 2 of 4]); k = the student's width, 64 of 192 (no projector);
#: the release's --alpha-corr with this project's correlation (docs/feature_kd.md, difference 5).
DEFAULT_FEATURE_ARGS = "--hidden --student-layer-indices [-1,-2] --teacher-layer-indices [-1,-3] --alpha-corr 0.05"
#: Set per run by the study: given after -- they would override an arm's own setting or the resume logic.
OWNED = {"--type", "--kd-ratio", "--seed", "--save", "--epochs", "--total-iters", "--model-path",
         "--teacher-model-path", "--data-dir", "--prompt-data-dir", "--lm-data-dir", "--eval-interval", "--eval-gen",
         "--no-eval-gen", "--overwrite", "--resume", "--lr", "--num-rollouts", "--max-new-tokens", "--method",
         "--selection-refresh"}


def arm_name(objective: str, method: str) -> str:
    return objective if method == "none" else f"{objective}-{method}"


def feature_signals(train: Path) -> dict[str, Optional[float]]:
    """From metrics.jsonl: the feature loss in the first and last logged training interval and at the final
    validation, the mean selection overlap of successive selections, and the attribution seconds in all (each train
    row holds a mean per step over the steps since the previous row)."""
    path = train / "metrics.jsonl"
    rows = [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []
    train_rows = [r for r in rows if "train/loss" in r]
    feat = [r["train/feat"] for r in train_rows if "train/feat" in r]
    valid = [r["valid/feat"] for r in rows if "valid/feat" in r]
    overlap = [r["train/selection_overlap"] for r in train_rows if "train/selection_overlap" in r]
    attribution, prev = 0.0, 0
    for r in train_rows:
        attribution += r.get("train/attribution_seconds", 0.0) * (r["step"] - prev)
        prev = r["step"]
    return {"feat_first": feat[0] if feat else None, "feat_last": feat[-1] if feat else None,
            "valid_feat": valid[-1] if valid else None,
            "overlap": statistics.fmean(overlap) if overlap else None,
            "attribution_s": attribution if feat else None}


def mean_opt(xs: list[Optional[float]], spec: str) -> str:
    vals = [x for x in xs if x is not None]
    return "—" if len(vals) < len(xs) or not vals else (mean_std(vals, spec) if len(vals) > 1 else format(vals[0], spec))


def render(results: dict[str, dict[int, dict[str, Any]]], timing: dict[str, dict[str, Any]],
           refs: dict[str, dict[str, str]], setup: str) -> str:
    """The main table (mean ± std over seeds; the overhead paired by seed with the run without the feature term),
    the change of Rouge-L from that run (paired), and the timing table."""
    lines = [setup, "",
             "| objective | feature term | Rouge-L | exact match | Δ Rouge-L vs none (paired) | feat first → last "
             "(train) | feat (valid, end) | selection overlap | train s | overhead vs none | attribution share |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, ref in refs.items():
        lines.append(f"| {name} | — | {ref['rougeL']} | {ref['exact_match']} | — | — | — | — | — | — | — |")
    for objective in OBJECTIVES:
        base = results.get(objective)
        for method in METHODS:
            per_seed = results.get(arm_name(objective, method))
            if not per_seed:
                continue
            rs = list(per_seed.values())
            seeds = [s for s in per_seed if base and s in base]
            delta = overhead = "—"
            if method != "none" and seeds:
                d = [per_seed[s]["rougeL"] - base[s]["rougeL"] for s in seeds]
                o = [per_seed[s]["train_s"] / base[s]["train_s"] - 1 for s in seeds]
                sd = statistics.stdev(d) if len(d) > 1 else 0.0
                delta = f"{statistics.fmean(d):+.2f} ± {sd:.2f}"
                overhead = f"{statistics.fmean(o):+.0%}"
            first, last = ([r[k] for r in rs] for k in ("feat_first", "feat_last"))
            feat = ("—" if method == "none" or None in first + last else  # means over seeds
                    f"{statistics.fmean(first):.3f} → {statistics.fmean(last):.3f}")
            share = [None if r["attribution_s"] is None else r["attribution_s"] / r["train_s"] for r in rs]
            lines.append(
                f"| {objective} | {method} | {mean_std([r['rougeL'] for r in rs])} | "
                f"{mean_std([r['exact_match'] for r in rs])} | {delta} | {feat} | "
                f"{mean_opt([r['valid_feat'] for r in rs], '.3f')} | {mean_opt([r['overlap'] for r in rs], '.3f')} | "
                f"{statistics.fmean(r['train_s'] for r in rs):.0f} | {overhead} | "
                f"{fmt(None if None in share else statistics.fmean(share), '.1%')} |")  # type: ignore[arg-type]
    if timing:
        lines += ["", "Selection refreshed every step (the original's setting), first seed only: seconds per optimizer "
                      "step, relative to the same objective without the feature term, and the attribution's share "
                      "of the step.", "",
                  "| objective | feature term | steps | s / step | × none | attribution s / step | attribution share |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for objective in OBJECTIVES:
            base_t = timing.get(objective)
            for method in METHODS:
                t = timing.get(arm_name(objective, method))
                if not t:
                    continue
                per_step = t["train_s"] / t["steps"]
                ratio = f"{t['train_s'] / base_t['train_s']:.2f}" if base_t else "—"
                attr = t["attribution_s"]
                lines.append(f"| {objective} | {method} | {t['steps']} | {per_step:.3f} | {ratio} | "
                             f"{fmt(None if attr is None else attr / t['steps'], '.3f')} | "
                             f"{fmt(None if attr is None else attr / t['train_s'], '.1%')} |")
    return "\n".join(lines) + "\n"


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_args(parser, "results/feature_kd_study")
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), help=f"any of {', '.join(OBJECTIVES)}")
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help=f"any of {', '.join(METHODS)} (none: the run without the feature term)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--total-iters", type=int, default=200, help="optimizer steps of every run (a budget choice)")
    parser.add_argument("--lr", type=float, default=1.65e-4,
                        help="lr of every run: MiniLLM's 5e-6 barely moves a model in 200 steps (docs/minillm.md); "
                             "1.65e-4 carries the release's total learning rate (5e-6 x 4950) in 150 post-warm-up steps")
    parser.add_argument("--num-rollouts", type=int, default=256, help="MiniLLM's rollouts per store (release 256)")
    parser.add_argument("--feature-args", default=DEFAULT_FEATURE_ARGS,
                        help="feature flags of every run with a feature term, besides --method and --selection-refresh")
    parser.add_argument("--selection-refresh", type=int, default=10,
                        help="re-select every N steps in the main runs (the timing runs: every step)")
    parser.add_argument("--timing-steps", type=int, default=32,
                        help="steps of each timing run, selection refreshed every step (0: no timing runs)")
    add_init_args(parser)
    parser.add_argument("--doc-key", default="feature-kd-study", help="--doc markers: <!-- KEY --> ... <!-- /KEY -->")
    add_shared_args(parser, "<!-- feature-kd-study --> (--doc-key)")
    args = parser.parse_args(argv)
    for flag, values, valid in (("--objectives", args.objectives, OBJECTIVES), ("--methods", args.methods, METHODS)):
        bad = [v for v in values if v not in valid]
        if bad:
            raise InputError(f"{flag}: unknown {bad}; valid: {', '.join(valid)}")
    for flag, value in (("--jobs", args.jobs), ("--total-iters", args.total_iters),
                        ("--num-rollouts", args.num_rollouts), ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:
            raise InputError(f"{flag} {value}: must be at least 1")
    if args.selection_refresh < 0 or args.timing_steps < 0:
        raise InputError("--selection-refresh / --timing-steps: must be >= 0")
    if not args.lr > 0:
        raise InputError(f"--lr {args.lr}: must be positive")
    if len(set(args.seeds)) != len(args.seeds):
        raise InputError(f"--seeds {' '.join(map(str, args.seeds))}: a seed is repeated")
    clash = sorted({a.split("=")[0] for a in args.train_args + shlex.split(args.feature_args)} & OWNED)
    if clash:
        raise InputError(f"{', '.join(clash)} after -- or in --feature-args: the study sets it for each run (use its "
                         f"own flags: --total-iters, --lr, --seeds, --methods, --selection-refresh, --num-rollouts, "
                         f"--init-args, --teacher, --student, --data-dir, --lm-data-dir, --max-new-tokens)")
    check_init_args(args.init_args)
    return args


@exit_on_input_error
def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse(argv)
    check_paths(args.teacher, args.student, args.data_dir,
                *([args.lm_data_dir] if "minillm" in args.objectives else []))
    lengths = data_lengths(args.data_dir)
    out = Path(args.out)
    d = MINILLM_TRAIN_DEFAULTS
    batch = int(d["batch_size"])
    timing_rollouts = max(1, args.timing_steps * batch // PPO_EPOCHS)
    arms = [(o, m) for o in args.objectives for m in args.methods]

    init_runs = initialisations(args, out)

    def want(objective: str, method: str, timing: bool) -> dict[str, Any]:
        w: dict[str, Any] = {"total_iters": args.timing_steps if timing else args.total_iters, "lr": args.lr,
                             "method": None if method == "none" else method}
        if method != "none":
            w["selection_refresh"] = 1 if timing else args.selection_refresh
        if objective == "minillm":
            w["num_rollouts"] = timing_rollouts if timing else args.num_rollouts
        return w

    for o, m in arms:
        for s in args.seeds:
            check_run_dir(out / arm_name(o, m) / str(s) / "train", want(o, m, False))
        if args.timing_steps:
            check_run_dir(out / "timing" / arm_name(o, m) / "train", want(o, m, True))

    py = sys.executable
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    teacher = ["--teacher-model-path", args.teacher] + (["--teacher-model-bf16"] if args.teacher_bf16 else [])
    optim = minillm_optimiser()
    common = ["--data-dir", args.data_dir, *lengths, "--max-new-tokens", str(args.max_new_tokens)]

    def train_cmd(objective: str, method: str, init: Path, timing: bool) -> list[str]:
        w = want(objective, method, timing)
        if objective == "kd":
            cmd = [py, "train_distill.py", "--model-path", str(init), "--type", "fkl", "--kd-ratio", "1.0", *teacher,
                   *optim]
        else:
            cmd = [py, "train_minillm.py", "--model-path", str(init), *teacher, "--lm-data-dir", args.lm_data_dir,
                   "--num-rollouts", str(w["num_rollouts"])]
        features = [] if method == "none" else ["--method", method, *shlex.split(args.feature_args),
                                                "--selection-refresh", str(w["selection_refresh"])]
        return [*cmd, "--lr", repr(args.lr), *common, "--total-iters", str(w["total_iters"]), "--eval-interval",
                "0", "--no-eval-gen", "--save-interval", "0" if timing else "100", *features,
                *args.train_args]

    def score(model: Path | str, dd: Path) -> dict[str, float]:
        return greedy_eval(model, args.data_dir, dd, args.max_new_tokens, threads)

    ensure_init = sft_initialiser(args, out, init_runs, common, threads)

    def one(objective: str, method: str, seed: int) -> None:
        dd = out / arm_name(objective, method) / str(seed)
        train_once([*train_cmd(objective, method, ensure_init(seed), False), "--seed", str(seed)], dd, threads)
        summary = json.loads((dd / "train" / RUN_SUMMARY).read_text())
        score(dd / "train" / str(summary["steps"]), dd)

    def timing_run(objective: str, method: str) -> None:
        seed = args.seeds[0]
        train_once([*train_cmd(objective, method, ensure_init(seed), True), "--seed", str(seed)],
                   out / "timing" / arm_name(objective, method), threads)

    # Seed-major: whole seeds finish first, so a study stopped early has complete seeds; the timing runs last.
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one, o, m, s) for s in args.seeds for o, m in arms]
        futures += [pool.submit(lambda: score(args.teacher, out / "teacher"))]
        futures += [pool.submit(lambda s=s: score(ensure_init(s), out / "sft" / str(s))) for s in args.seeds]
        if args.timing_steps:
            futures += [pool.submit(timing_run, o, m) for o, m in arms]
        for f in futures:
            f.result()

    results: dict[str, dict[int, dict[str, Any]]] = {}
    for s in args.seeds:
        for o, m in arms:
            dd = out / arm_name(o, m) / str(s)
            summary = json.loads((dd / "train" / RUN_SUMMARY).read_text())
            results.setdefault(arm_name(o, m), {})[s] = {
                **score(dd / "train" / str(summary["steps"]), dd), **feature_signals(dd / "train"),
                "train_s": summary["train_seconds"], "wall_s": summary["wall_seconds"],
                "prepare_s": summary.get("prepare_seconds"), "steps": summary["steps"]}
    timing: dict[str, dict[str, Any]] = {}
    if args.timing_steps:
        for o, m in arms:
            train = out / "timing" / arm_name(o, m) / "train"
            summary = json.loads((train / RUN_SUMMARY).read_text())
            timing[arm_name(o, m)] = {"train_s": summary["train_seconds"], "steps": summary["steps"],
                                      "attribution_s": feature_signals(train)["attribution_s"]}
    init_scores = [score(init_checkpoint(init_runs[s]), out / "sft" / str(s)) for s in args.seeds]
    teacher_score = score(args.teacher, out / "teacher")
    refs = {f"teacher `{args.teacher}`": {k: f"{v:.2f}" for k, v in teacher_score.items()},
            "the SFT initialisation": {k: mean_std([x[k] for x in init_scores]) for k in ("rougeL", "exact_match")}}
    init_steps = sorted({str(init_checkpoint(init_runs[s])).rsplit("/", 1)[-1] for s in args.seeds})
    setup = (f"Data `{args.data_dir}` (lengths from its meta.json: `{' '.join(lengths)}`); teacher `{args.teacher}`; "
             f"seeds {args.seeds}. Initialisation per seed: train_sft.py from `{args.student}` with `{args.init_args}`"
             f"{f' (the runs of `{args.init_from}`)' if args.init_from else ''}, best checkpoint by valid/loss (steps "
             f"{', '.join(init_steps)}). Every run: {args.total_iters} optimizer steps from it at lr {args.lr:g} "
             f"(AdamW (0.9, 0.95), weight decay 1e-6, constant after {d['warmup_iters']} warm-up steps, batch "
             f"{batch}); kd: fkl, kd-ratio 1, no pretraining term; minillm: {args.num_rollouts} rollouts per store, "
             f"{PPO_EPOCHS} PPO epochs, teacher-mixed sampling (α 0.2), the single-step term, the pretraining term "
             f"on `{args.lm_data_dir}`. Feature term: `--method M {args.feature_args} --selection-refresh "
             f"{args.selection_refresh}` (attribution on the teacher's own sampled answer, the default). Flags for "
             f"every run, last: `{' '.join(args.train_args)}`. Rouge-L and exact match: greedy on the validation "
             f"split (up to {args.max_new_tokens} tokens), the final checkpoint. feat: the feature term as it enters "
             f"the loss (α included), first and last logged training interval, and at the final validation; "
             f"selection overlap: |A∩B|/k of successive selections, mean over the run; train s: run_summary.json "
             f"(mean over seeds, {args.jobs} run(s) at a time); overhead: train s over the same seed's run without "
             f"the feature term, − 1; attribution share: attribution seconds / train seconds.")
    table = render(results, timing, refs, setup)
    write_report(out, table, {"setup": setup, "runs": results, "timing": timing, "references": refs,
                              "args": vars(args)}, args.doc, args.doc_key)
    return results


if __name__ == "__main__":
    main()
