"""MiniLLM against SFT and KD on one teacher/student pair, over seeds, with its two ablations.

Per seed, every arm continues from that seed's *initialisation*: an SFT run of ``--student`` (train_sft.py with
``--init-args``, validated every epoch on the loss, no generation, so the trainer's best checkpoint is the one of
lowest valid/loss — distill/summary.py), as MiniLLM starts from an SFT student. The arms:

    sft              the initialisation itself (the SFT baseline)
    kd               train_distill.py --type fkl --kd-ratio 1.0
    minillm          train_minillm.py: teacher-mixed sampling (alpha 0.2) and the single-step term (the release)
    minillm-nomix    --teacher-mixed-alpha 0
    minillm-noreg    --no-single-step-reg
    minillm-lr, kd-lr  minillm / kd at --budget-lr instead of the release lr (only with --budget-lr)

The distillation arms share MiniLLM's optimiser and schedule (distill/config.py MINILLM_TRAIN_DEFAULTS: AdamW (0.9,
0.95), weight decay 1e-6, lr 5e-6 constant after 100 warm-up steps, batch 16), the same number of optimizer steps
(``--total-iters``, a budget choice) and the same initialisation, so KD and MiniLLM make the same number of updates of
the same size from the same point; KD's step is cheaper (no rollouts, no pretraining batch) and its time is reported.
The MiniLLM arms add the pretraining term on ``--lm-data-dir`` (MiniLLM's --kd-ratio 0.5: half CE, half the teacher's
soft cross-entropy); KD has none (as ``--type fkl --kd-ratio 1.0`` alone). Rollouts and evaluation answers go up to
``--max-new-tokens``; prompt and sequence lengths come from the data's meta.json.

Each arm's *final* checkpoint (the initialisation: its best by validation loss) is scored as tools/onpolicy_study.py
scores: greedy Rouge-L and exact match on the validation split (evaluate.py); the reverse KL to the teacher on the
student's own sampled answers to the validation prompts (tools/eval_divergence.py --own-generations, T 1, seed
``--own-seed``) and their mean length; the same reverse KL on the reference answers. Times from run_summary.json;
MiniLLM's training signals (reward, single-step reverse KL, clip fraction, response length, importance weights) in
the first and last logged interval from metrics.jsonl. The teacher and the untrained student are scored too.

A run with run_summary.json is not redone, an interrupted one continues (``--resume``), a run directory made with
other settings is refused. ``--init-from DIR`` takes finished SFT runs ``DIR/<seed>/train`` (same student, data and
seed, validated every epoch without generation) instead of training them. ``--jobs N`` runs N at a time with cores/N
threads each. Writes ``<out>/report.{md,json}`` and, with ``--doc``, the tables into that file between
``<!-- minillm-study -->`` markers. The study of docs/minillm.md "Results on the built-in data":

    python tools/minillm_study.py --jobs 2 --total-iters 200 --init-from results/onpolicy_study/sft \\
        --doc docs/minillm.md -- --log-interval 8 --eval-batch-size 100 \\
        --deepspeed-config configs/deepspeed/ds_config_zero0_fp32.json
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

from distill.config import MINILLM_TRAIN_DEFAULTS, InputError, exit_on_input_error  # noqa: E402
from study_common import (RUN_SUMMARY, add_init_args, add_pair_args, add_shared_args, check_init_args,  # noqa: E402
                          check_paths, check_run_dir, data_lengths, fmt, greedy_eval, init_checkpoint,
                          initialisations, mean_std, minillm_optimiser, own_generation_scores, run, sft_initialiser,
                          train_once, write_report)


ARMS = ("kd", "minillm", "minillm-nomix", "minillm-noreg", "minillm-lr", "kd-lr")
DEFAULT_ARMS = ["kd", "minillm", "minillm-nomix", "minillm-noreg"]
LR_ARMS = ("minillm-lr", "kd-lr")
#: Each MiniLLM arm's own flags on top of the release defaults.
MINILLM_FLAGS = {"minillm": [], "minillm-nomix": ["--teacher-mixed-alpha", "0"],
                 "minillm-noreg": ["--no-single-step-reg"], "minillm-lr": []}
LABELS = {"sft": "SFT (the initialisation)", "kd": "KD (fkl, kd-ratio 1)",
          "minillm": "MiniLLM (α 0.2, single-step reg)", "minillm-nomix": "MiniLLM without teacher mix (α 0)",
          "minillm-noreg": "MiniLLM without single-step reg", "minillm-lr": "MiniLLM at --budget-lr",
          "kd-lr": "KD at --budget-lr"}
#: Set per run by the study: given after -- they would override an arm's own setting or the resume logic.
OWNED = {"--type", "--kd-ratio", "--seed", "--save", "--epochs", "--total-iters", "--model-path",
         "--teacher-model-path", "--data-dir", "--prompt-data-dir", "--lm-data-dir", "--eval-interval", "--eval-gen",
         "--no-eval-gen", "--overwrite", "--resume", "--lr", "--teacher-mixed-alpha", "--single-step-reg",
         "--no-single-step-reg", "--num-rollouts", "--max-new-tokens"}
#: MiniLLM's training signals read from metrics.jsonl (first and last logged interval).
SIGNALS = ("train/reward", "train/reg", "train/pg", "train/clip_fraction", "train/response_len", "train/weight_min",
           "train/weight_max", "train/lm")


def signals(train: Path) -> dict[str, dict[str, Optional[float]]]:
    """MiniLLM's logged training signals in the first and the last logged interval (train rows of metrics.jsonl)."""
    path = train / "metrics.jsonl"
    rows = []
    if path.is_file():
        rows = [r for r in map(json.loads, path.read_text().splitlines()) if "train/reward" in r]
    out: dict[str, dict[str, Optional[float]]] = {}
    for key in SIGNALS:
        name = key.removeprefix("train/")
        vals = [r[key] for r in rows if key in r]
        out[name] = {"first": vals[0] if vals else None, "last": vals[-1] if vals else None}
    return out


def paired(xs: list[float], spec: str) -> str:
    """Mean (signed) ± std of paired differences."""
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{format(statistics.fmean(xs), '+' + spec)} ± {format(sd, spec)}"


def mean_opt(xs: list[Optional[float]]) -> Optional[float]:
    return None if not xs or any(x is None for x in xs) else statistics.fmean(xs)  # type: ignore[arg-type]


def render(results: dict[str, dict[int, dict[str, Any]]], refs: dict[str, dict[str, Any]], setup: str,
           budget_lr: Optional[float] = None) -> str:
    """One row per arm (mean ± std over seeds; times as means), the teacher's and the untrained student's rows;
    the paired change from each seed's initialisation; MiniLLM's training signals."""
    def label(arm: str) -> str:
        return LABELS.get(arm, arm).replace("--budget-lr", f"lr {budget_lr:g}" if budget_lr else "--budget-lr")

    lines = [setup, "",
             "| model | Rouge-L | exact match | RKL on own samples | own sample tokens | RKL on references | "
             "train s | wall s | rollouts (prepare / train s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, ref in refs.items():
        lines.append(f"| {name} | {ref['rougeL']:.2f} | {ref['exact_match']:.2f} | {ref['own_rkl']:.4f} | "
                     f"{ref['own_tokens']:.1f} | {fmt(ref.get('tf_rkl'), '.4f')} | — | — | — |")
    for arm, per_seed in results.items():
        rs = list(per_seed.values())
        timed = arm != "sft"
        share = mean_opt([None if r.get("prepare_s") is None else r["prepare_s"] / r["train_s"] for r in rs])
        lines.append(
            f"| {label(arm)} | {mean_std([r['rougeL'] for r in rs])} | "
            f"{mean_std([r['exact_match'] for r in rs])} | {mean_std([r['own_rkl'] for r in rs], '.4f')} | "
            f"{statistics.fmean(r['own_tokens'] for r in rs):.1f} | {mean_std([r['tf_rkl'] for r in rs], '.4f')} | "
            + (f"{statistics.fmean(r['train_s'] for r in rs):.0f} | {statistics.fmean(r['wall_s'] for r in rs):.0f}"
               f" | {fmt(share, '.1%')} |" if timed else
               f"({statistics.fmean(r['train_s'] for r in rs):.0f}) | ({statistics.fmean(r['wall_s'] for r in rs):.0f})"
               f" | — |"))
    if "sft" in results and len(results) > 1:
        lines += ["", "Change from each seed's own initialisation (arm − SFT, paired by seed; mean ± std over seeds):",
                  "", "| arm | Δ Rouge-L | Δ exact match | Δ RKL on own samples | Δ RKL on references |",
                  "|---|---:|---:|---:|---:|"]
        for arm, per_seed in results.items():
            if arm == "sft":
                continue
            base = results["sft"]
            seeds = [s for s in per_seed if s in base]
            d = {k: [per_seed[s][k] - base[s][k] for s in seeds] for k in ("rougeL", "exact_match", "own_rkl",
                                                                           "tf_rkl")}
            lines.append(f"| {label(arm)} | {paired(d['rougeL'], '.2f')} | {paired(d['exact_match'], '.2f')} | "
                         f"{paired(d['own_rkl'], '.4f')} | {paired(d['tf_rkl'], '.4f')} |")
    mini = [a for a in results if a.startswith("minillm")]
    if mini:
        lines += ["", "MiniLLM's training signals (metrics.jsonl; mean over seeds of the first → last logged interval): "
                      "reward per token (log p_T − log q_old, scaled by 1/0.5), the single-step reverse KL on the "
                      "rollout positions (`reg`), PPO clip fraction, rollout response length (tokens), importance "
                      "weights min / max over the interval, pretraining term (`lm`).", "",
                  "| arm | reward | reg | clip fraction | response len | weight min | weight max | lm |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for arm in mini:
            st = [r.get("signals") or {} for r in results[arm].values()]  # none read: n/a

            def fl(name: str, spec: str) -> str:
                first, last = (mean_opt([s.get(name, {}).get(w) for s in st]) for w in ("first", "last"))
                return f"{fmt(first, spec)} → {fmt(last, spec)}"
            lines.append(f"| {label(arm)} | {fl('reward', '.3f')} | {fl('reg', '.3f')} | "
                         f"{fl('clip_fraction', '.3f')} | {fl('response_len', '.1f')} | {fl('weight_min', '.3f')} | "
                         f"{fl('weight_max', '.3f')} | {fl('lm', '.3f')} |")
    return "\n".join(lines) + "\n"


def parse(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_pair_args(parser, "results/minillm_study")
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS,
                        help=f"any of {', '.join(ARMS)} (the SFT initialisation is always scored)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--total-iters", type=int, default=200,
                        help="optimizer steps of every distillation arm (a budget choice; the release runs 5000)")
    parser.add_argument("--num-rollouts", type=int, default=256, help="MiniLLM's rollouts per store (release 256)")
    parser.add_argument("--budget-lr", type=float,
                        help="the lr of the minillm-lr / kd-lr arms (an extra, labelled arm; the others keep 5e-6)")
    add_init_args(parser)
    parser.add_argument("--own-seed", type=int, default=10, help="seed of the sampled answers of the own-sample RKL")
    parser.add_argument("--doc-key", default="minillm-study", help="--doc markers: <!-- KEY --> ... <!-- /KEY -->")
    add_shared_args(parser, "<!-- minillm-study --> (--doc-key)")
    args = parser.parse_args(argv)
    bad = [a for a in args.arms if a not in ARMS]
    if bad:
        raise InputError(f"--arms: unknown {bad}; valid: {', '.join(ARMS)} (sft is always in)")
    lr_arms = [a for a in args.arms if a in LR_ARMS]
    if lr_arms and args.budget_lr is None:
        raise InputError(f"--arms {' '.join(lr_arms)}: needs --budget-lr (their learning rate)")
    if args.budget_lr is not None and not args.budget_lr > 0:
        raise InputError(f"--budget-lr {args.budget_lr}: must be positive")
    for flag, value in (("--jobs", args.jobs), ("--total-iters", args.total_iters),
                        ("--num-rollouts", args.num_rollouts), ("--max-new-tokens", args.max_new_tokens)):
        if value < 1:
            raise InputError(f"{flag} {value}: must be at least 1")
    if len(set(args.seeds)) != len(args.seeds):
        raise InputError(f"--seeds {' '.join(map(str, args.seeds))}: a seed is repeated")
    clash = sorted({a.split("=")[0] for a in args.train_args} & OWNED)
    if clash:
        raise InputError(f"{', '.join(clash)} after --: the study sets it for each run (use its own flags: "
                         f"--total-iters, --seeds, --num-rollouts, --budget-lr, --init-args, --teacher, --student, "
                         f"--data-dir, --lm-data-dir, --max-new-tokens)")
    check_init_args(args.init_args)
    return args


@exit_on_input_error
def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    args = parse(argv)
    check_paths(args.teacher, args.student, args.data_dir,
                *([args.lm_data_dir] if any(a.startswith("minillm") for a in args.arms) else []))
    lengths = data_lengths(args.data_dir)
    out = Path(args.out)
    d = MINILLM_TRAIN_DEFAULTS
    release_lr = float(d["lr"])

    def lr_of(arm: str) -> float:
        return float(args.budget_lr) if arm in LR_ARMS else release_lr

    init_runs = initialisations(args, out)
    for s in args.seeds:
        for arm in args.arms:
            want: dict[str, Any] = {"total_iters": args.total_iters, "lr": lr_of(arm)}
            if arm.startswith("minillm"):
                want["num_rollouts"] = args.num_rollouts
            check_run_dir(out / arm / str(s) / "train", want)

    py = sys.executable
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    teacher = ["--teacher-model-path", args.teacher] + (["--teacher-model-bf16"] if args.teacher_bf16 else [])
    optim = minillm_optimiser()
    common = ["--data-dir", args.data_dir, *lengths, "--max-new-tokens", str(args.max_new_tokens)]
    distill_common = ["--total-iters", str(args.total_iters), "--eval-interval", "0", "--no-eval-gen",
                      "--save-interval", "100"]

    def train_cmd(arm: str, init: Path) -> list[str]:
        if arm.startswith("kd"):
            cmd = [py, "train_distill.py", "--model-path", str(init), "--type", "fkl", "--kd-ratio", "1.0", *teacher,
                   *optim]
        else:
            cmd = [py, "train_minillm.py", "--model-path", str(init), *teacher, "--lm-data-dir", args.lm_data_dir,
                   "--num-rollouts", str(args.num_rollouts), *MINILLM_FLAGS[arm]]
        return [*cmd, "--lr", repr(lr_of(arm)), *common, *distill_common, *args.train_args]

    own = ["--own-generations", "--max-new-tokens", str(args.max_new_tokens), "--gen-batch-size", "100",
           "--gen-seed", str(args.own_seed)]

    def score(model: Path | str, dd: Path) -> None:
        """Greedy Rouge-L and the divergences of one model, each skipped when its output exists."""
        greedy_eval(model, args.data_dir, dd, args.max_new_tokens, threads)
        div = dd / "divergence.json"
        if not div.exists() or "own_generations" not in json.loads(div.read_text()):
            run([py, "tools/eval_divergence.py", "--student", str(model), "--teacher", args.teacher, "--data-dir",
                 args.data_dir, "--kinds", "rkl", *own, "--out", str(div)], dd / "divergence.log", threads)

    ensure_init = sft_initialiser(args, out, init_runs, common, threads)

    def sft(seed: int) -> None:
        score(ensure_init(seed), out / "sft" / str(seed))

    def one(arm: str, seed: int) -> None:
        init = ensure_init(seed)
        dd = out / arm / str(seed)
        train_once([*train_cmd(arm, init), "--seed", str(seed)], dd, threads)
        summary = json.loads((dd / "train" / RUN_SUMMARY).read_text())
        score(dd / "train" / str(summary["steps"]), dd)

    def references() -> None:
        score(args.teacher, out / "teacher")
        score(args.student, out / "initial")

    # Seed-major, the initialisation first: whole seeds finish first, so a study stopped early has complete seeds.
    tasks = [(arm, s) for s in args.seeds for arm in ["sft", *args.arms]]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(sft if arm == "sft" else one, *((s,) if arm == "sft" else (arm, s)))
                   for arm, s in tasks] + [pool.submit(references)]
        for f in futures:
            f.result()

    results: dict[str, dict[int, dict[str, Any]]] = {}
    for arm, s in tasks:
        dd = out / arm / str(s)
        train = init_runs[s] if arm == "sft" else dd / "train"
        summary = json.loads((train / RUN_SUMMARY).read_text())
        results.setdefault(arm, {})[s] = {
            **own_generation_scores(dd), "train_s": summary["train_seconds"], "wall_s": summary["wall_seconds"],
            "prepare_s": summary.get("prepare_seconds"), "steps": summary["steps"], "tokens": summary.get("tokens"),
            "checkpoint": str(init_checkpoint(train) if arm == "sft" else train / str(summary["steps"])),
            "signals": signals(train) if arm.startswith("minillm") else None}
    refs = {f"teacher `{args.teacher}`": own_generation_scores(out / "teacher"),
            f"untrained student `{args.student}`": own_generation_scores(out / "initial")}
    init_steps = sorted({r["checkpoint"].rsplit("/", 1)[-1] for r in results["sft"].values()})
    setup = (f"Data `{args.data_dir}` (lengths from its meta.json: `{' '.join(lengths)}`); teacher `{args.teacher}`; "
             f"seeds {args.seeds}. Initialisation per seed: train_sft.py from `{args.student}` with `{args.init_args}`"
             f"{f' (the runs of `{args.init_from}`)' if args.init_from else ''}, validated every epoch on the loss, "
             f"best checkpoint by valid/loss (steps {', '.join(init_steps)}); its row is the SFT baseline (its train "
             f"and wall seconds in parentheses: not part of the arms' budget). Distillation arms: "
             f"{args.total_iters} optimizer steps from the initialisation, MiniLLM's optimiser (AdamW (0.9, 0.95), "
             f"weight decay 1e-6, lr {release_lr:g} constant after {d['warmup_iters']} warm-up steps, batch "
             f"{d['batch_size']}){f', the *-lr arms at lr {args.budget_lr:g}' if args.budget_lr else ''}; MiniLLM: "
             f"{args.num_rollouts} rollouts per store, 4 PPO epochs, rollouts sampled at T 1 up to "
             f"{args.max_new_tokens} tokens, pretraining term on `{args.lm_data_dir}` (kd-ratio 0.5); KD: no "
             f"pretraining term. Flags for every distillation run, last: `{' '.join(args.train_args)}`. Scores of "
             f"each run's final checkpoint: Rouge-L and exact match greedy on the validation split (up to "
             f"{args.max_new_tokens} tokens); RKL on own samples: token mean of KL(q_student ‖ p_teacher) over the "
             f"student's own sampled answers (T 1, seed {args.own_seed}) to the validation prompts, EOS position "
             f"included where it ended; own sample tokens: their mean length; RKL on references: the same on the "
             f"reference answers. Train s / wall s: run_summary.json (means over seeds; {args.jobs} run(s) at a "
             f"time); rollouts: prepare_seconds / train_seconds.")
    table = render(results, refs, setup, args.budget_lr)
    write_report(out, table, {"setup": setup, "runs": results, "references": refs, "args": vars(args)}, args.doc,
                 args.doc_key)
    return results


if __name__ == "__main__":
    main()
