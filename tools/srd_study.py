"""SRD + a temperature KD kind versus the same kind on the full data, over seeds: Rouge-L and training time.

For each seed it trains a plain KD student (``--type``, ``--epochs`` over the full training set, constant
``--baseline-temperature``) and an SRD student (``tools/srd_run.py``: reflection, easy -> hard ranking, the hardest of
``--num-stages`` parts dropped, cumulative stages at rising temperature). Both runs last ``--epochs`` epochs: SRD's
stages split them into equal intervals (``--epochs / stages`` each; the curriculum introduces a new part at fixed
intervals), each stage's epochs counted over the examples it trains on. With 4 parts and 3 stages (25 %, 50 %, 75 %
of the data) that is half the plain run's example passes; ``--stage-epochs`` sets another split (e.g. ``--epochs / 2``
per stage: the examples SRD keeps are seen ``--epochs`` times on average, 0.75x the passes). ``--keep-stages 4``
trains every part (4 stages over 25/50/75/100 %: 0.625x the passes, nothing dropped). ``--with-sft`` adds an SFT
student with the plain arm's epochs and evaluation (no teacher), as a reference for what KD adds. Both arms start from the
same initial student and are scored by the same greedy evaluation.

SRD ranks examples by how the *initial* student does on them, which says nothing for a randomly initialised model
(every answer scores Rouge-L 0). Real students start pretrained; ``--warm-epochs N`` (default 1) stands in for that by
first training the student N epochs of SFT and giving both arms that checkpoint.

The plain arm lives in ``<out>/<type>-e<epochs>/<seed>``, so studies of other lengths share the warm start and the
reflection. Runs are sequential (one at a time, so the two arms of a seed are timed under the same conditions) and skipped when
their outputs exist, so an interrupted study resumes. Writes ``<out>/report.json``, ``<out>/report.md`` and, with
``--doc``, the same table into that markdown file between the markers ``<!-- KEY VARIANT -->`` and
``<!-- /KEY VARIANT -->`` (KEY: ``--doc-key``, default ``srd-study``;
VARIANT: ``TYPE-eN`` with N the epochs per stage, ``-tT0-T1-T2`` added for a temperature schedule other than the
default, ``-by-FIELD`` for ``--stratify-by FIELD``).

    python tools/srd_study.py --teacher results/quickstart/sft-teacher/best \
        --student checkpoints/tiny-gpt2-student --data-dir processed_data/synth/full/gpt2 --out results/srd_study \
        --seeds 1 2 3 --epochs 6 --teacher-bf16 --doc docs/srd_results.md -- --lr 1e-3 --batch-size 32

``--recipe release`` runs another study (docs/srd_results.md, section 7): per seed, from the same warm student, SRD
as the GPT-2 launcher runs it by default (the release's recipe), plain KD with the release's ``kd_base.sh`` (fkl,
kd-ratio 1.0, lr 5e-4 cosine to 1e-7, 20 epochs, batch 8) and plain KD with SRD's stage recipe on all the data (3
chained runs, no ranking or reflection); each arm's best checkpoint (validation Rouge-L every epoch) is scored once,
greedy. ``--lanes N`` runs N of those runs at a time, each on one thread; every SRD seed reflects on its own, so its
wall time carries its reflection. Writes between ``<!-- KEY release -->`` markers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from distill.config import InputError, exit_on_input_error  # noqa: E402
from study_common import add_shared_args, category_rouge, check_paths, mean_std, run, write_report  # noqa: E402



def timed(cmd: list[str], log: Path, done: Path, stamp: Path, threads: Optional[int] = None) -> float:
    """Run ``cmd`` unless ``done`` exists; its wall seconds are kept in ``stamp`` (a resumed study reuses them). A
    training run the study was interrupted in continues: ``--resume`` (a new directory just starts; the SRD runner
    resumes by itself and drops the flag)."""
    if not done.exists():
        cmd = [*cmd, "--resume"]
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"wall_seconds": run(cmd, log, threads)}))
    return json.loads(stamp.read_text())["wall_seconds"] if stamp.exists() else float("nan")


def render(rows: list[dict[str, Any]], setup: str, teacher_rouge: float, reflection_s: Optional[float]) -> str:
    lines = [setup, "",
             "| seed | plain Rouge-L | SRD Rouge-L | Δ | plain train s | SRD train s | train ratio | "
             "plain wall s | SRD wall s (stages) | wall ratio | tokens ratio |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['plain_rougeL']:.2f} | {r['srd_rougeL']:.2f} | "
                     f"{r['srd_rougeL'] - r['plain_rougeL']:+.2f} | {r['plain_train_s']:.1f} | "
                     f"{r['srd_train_s']:.1f} | {r['srd_train_s'] / r['plain_train_s']:.2f} | "
                     f"{r['plain_wall_s']:.1f} | {r['srd_wall_s']:.1f} | {r['srd_wall_s'] / r['plain_wall_s']:.2f} | "
                     f"{r['tokens_ratio']:.2f} |")
    m = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k != "seed"}
    d = m["srd_rougeL"] - m["plain_rougeL"]
    train_ratio = m["srd_train_s"] / m["plain_train_s"]
    wall_ratio = m["srd_wall_s"] / m["plain_wall_s"]
    lines.append(f"| mean | {mean_std([r['plain_rougeL'] for r in rows])} | "
                 f"{mean_std([r['srd_rougeL'] for r in rows])} | {d:+.2f} | {m['plain_train_s']:.1f} | "
                 f"{m['srd_train_s']:.1f} | {train_ratio:.2f} | {m['plain_wall_s']:.1f} | {m['srd_wall_s']:.1f} | "
                 f"{wall_ratio:.2f} | {m['tokens_ratio']:.2f} |")
    lines += ["", f"Teacher Rouge-L {teacher_rouge:.2f}. Ratios of means are SRD / plain."]
    if "sft_rougeL" in rows[0]:
        lines.append(f"SFT from the same student, same epochs and evaluation, no teacher (`--with-sft`): Rouge-L "
                     f"{mean_std([r['sft_rougeL'] for r in rows])} (seeds: "
                     f"{', '.join(format(r['sft_rougeL'], '.2f') for r in rows)}).")
    if reflection_s is not None:
        with_refl = (m["srd_wall_s"] * len(rows) + reflection_s) / (m["plain_wall_s"] * len(rows))
        lines.append(f"Reflection of the initial student (once, shared by the {len(rows)} seeds): {reflection_s:.1f} s"
                     f" wall; counting it, SRD wall time over the {len(rows)} seeds is {with_refl:.2f}x the plain "
                     f"runs' (a single seed would carry it alone: "
                     f"{(m['srd_wall_s'] + reflection_s) / m['plain_wall_s']:.2f}x).")
    lines.append(f"Criteria (mean of {len(rows)} seeds): training time ratio {train_ratio:.2f} "
                 f"({'<=' if train_ratio <= 0.7 else '>'} 0.7), Rouge-L difference {d:+.2f} "
                 f"({'not lower by more than 0.5' if d >= -0.5 else 'lower by more than 0.5'}).")
    return "\n".join(lines) + "\n"


def variant_name(kind: str, stage_epochs: int, stages: int, num_parts: int, temperatures: list[float],
                 stratify_by: Optional[str] = None) -> str:
    """The SRD arm's name (its directory ``srd-<name>`` and its doc markers): ``<kind>-e<stage epochs>``, then
    ``-k<stages>`` when not the default number of trained stages, ``-t<taus>`` when not the default schedule and
    ``-by-<field>`` with ``--stratify-by``."""
    from distill.srd import default_keep_stages, temperature_schedule

    return (f"{kind}-e{stage_epochs}" + ("" if stages == default_keep_stages(num_parts) else f"-k{stages}")
            + ("" if temperatures == temperature_schedule(stages) else "-t" + "-".join(f"{t:g}" for t in temperatures))
            + (f"-by-{stratify_by}" if stratify_by else ""))


def category_table(plain_evals: list[Path], srd_evals: list[Path], ranking: Path, train_jsonl: Path,
                   num_parts: int, trained: int) -> str:
    """Rouge-L per task category, plain vs SRD (mean over seeds), with where the category's training examples fell in
    the easy -> hard parts; empty when the data has no categories."""
    plain, srd_ = category_rouge(plain_evals), category_rouge(srd_evals)
    if set(plain) <= {"all"} or not ranking.exists() or not train_jsonl.exists():
        return ""
    train = [json.loads(line) for line in train_jsonl.read_text().splitlines()]
    parts: dict[str, list[int]] = {}
    noisy, sizes = [0] * num_parts, [0] * num_parts
    for line in ranking.read_text().splitlines():
        r = json.loads(line)
        parts.setdefault(train[r["index"]].get("category"), [0] * num_parts)[r["part"]] += 1
        sizes[r["part"]] += 1
        noisy[r["part"]] += bool(train[r["index"]].get("noisy"))
    dropped = ("" if trained == num_parts else f" (part {trained} is never trained)" if trained == num_parts - 1
               else f" (parts {trained} to {num_parts - 1} are never trained)")
    lines = ["", "Rouge-L by task category (mean over seeds) and the category's training examples in each part, "
                 f"easiest first{dropped}:", "",
             "| category | plain | SRD | Δ | examples per part |", "|---|---:|---:|---:|---|"]
    for c in sorted(plain):
        lines.append(f"| {c} | {plain[c]:.1f} | {srd_.get(c, float('nan')):.1f} | "
                     f"{srd_.get(c, float('nan')) - plain[c]:+.1f} | {' / '.join(map(str, parts.get(c, [])))} |")
    if sum(noisy):  # data made with make_synthetic_data.py --noise-frac: did the ranking find the wrong labels?
        lines += ["", f"Training examples with a corrupted label (`noisy`) in each part, easiest first: "
                      f"{' / '.join(map(str, noisy))} of {' / '.join(map(str, sizes))}"
                      + (f" ({100 * sum(noisy[trained:]) / sum(noisy):.0f} % of them in the untrained part(s))."
                         if trained < num_parts else ".")]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# --recipe release: SRD as released against the release's KD and against SRD's own recipe on all the data.

#: The launchers' training flags (scripts/common/train_flags.sh TRAIN_FLAGS, less the values each arm sets).
LAUNCHER_FLAGS = ["--gradient-accumulation-steps", "1", "--lr-schedule", "cosine", "--warmup-iters", "0",
                  "--weight-decay", "1e-2", "--clip-grad", "1.0", "--eval-gen", "--eval-interval", "-1",
                  "--save-interval", "-1"]
#: The validation decoding of the release's scripts (and the launchers): sampled at T = 1, top-k 0, top-p 1.
RELEASE_VALID_GEN = ["--do-sample", "--top-k", "0", "--top-p", "1.0", "--temperature", "1.0"]
#: SRD's GPT-2 recipe (scripts/gpt2/srd/train_0.1B_1.5B.sh + scripts/common/srd.sh): per stage, as released.
SRD_RECIPE = {"lr": "1e-4", "lr_min": "1e-7", "batch_size": "16", "epochs": "8",
              "kd_ratios": ["0.8", "0.9", "1.0"], "temperatures": ["1", "1.5", "2"]}
#: The release's scripts/gpt2/kd/kd_base.sh: lr 5e-4, 20 epochs, kd-ratio 1.0, --type kd (forward KL at tau 1),
#: batch 2 per GPU x 4 GPUs (8), no warm-up, cosine to --lr-min's default 1e-7, weight decay 0.01, clip 1.0.
KD_RECIPE = {"lr": "5e-4", "lr_min": "1e-7", "batch_size": "8", "epochs": "20", "kd_ratio": "1.0", "type": "fkl"}
ARMS = (("srd", "SRD (release recipe)"), ("kd", "KD (release kd_base)"), ("kd_all", "KD (SRD recipe, all data)"))


def release_tables(rows: list[dict[str, Any]]) -> str:
    """The release study's per-seed tables and their mean ± std rows: Rouge-L of each arm's best checkpoint, then
    what each arm cost (wall seconds, SRD's with its reflection; the trainers' train seconds and tokens)."""
    def cell(r: dict[str, Any], key: str, spec: str) -> str:
        return format(r[key], spec)

    def mean_row(key: str, spec: str) -> str:
        return mean_std([r[key] for r in rows], spec)

    lines = ["| seed | SRD | KD (release) | KD (SRD recipe, all data) | SRD − KD | SRD − KD-all |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows + [None]:
        if r is None:
            d1 = statistics.fmean(x["srd_rougeL"] - x["kd_rougeL"] for x in rows)
            d2 = statistics.fmean(x["srd_rougeL"] - x["kd_all_rougeL"] for x in rows)
            lines.append(f"| mean | {mean_row('srd_rougeL', '.2f')} | {mean_row('kd_rougeL', '.2f')} | "
                         f"{mean_row('kd_all_rougeL', '.2f')} | {d1:+.2f} | {d2:+.2f} |")
        else:
            lines.append(f"| {r['seed']} | {r['srd_rougeL']:.2f} | {r['kd_rougeL']:.2f} | {r['kd_all_rougeL']:.2f} | "
                         f"{r['srd_rougeL'] - r['kd_rougeL']:+.2f} | {r['srd_rougeL'] - r['kd_all_rougeL']:+.2f} |")
    lines += ["", "| seed | wall s: SRD (reflection s) | KD | KD-all | train s: SRD | KD | KD-all | "
                  "tokens: SRD | KD | KD-all |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['srd_wall_s']:.0f} ({r['srd_reflection_s']:.0f}) | {r['kd_wall_s']:.0f} | "
                     f"{r['kd_all_wall_s']:.0f} | {r['srd_train_s']:.0f} | {r['kd_train_s']:.0f} | "
                     f"{r['kd_all_train_s']:.0f} | {r['srd_tokens']:,} | {r['kd_tokens']:,} | "
                     f"{r['kd_all_tokens']:,} |")
    lines.append(f"| mean | {mean_row('srd_wall_s', '.0f')} ({mean_row('srd_reflection_s', '.0f')}) | "
                 f"{mean_row('kd_wall_s', '.0f')} | {mean_row('kd_all_wall_s', '.0f')} | "
                 f"{mean_row('srd_train_s', '.0f')} | {mean_row('kd_train_s', '.0f')} | "
                 f"{mean_row('kd_all_train_s', '.0f')} | {statistics.fmean(r['srd_tokens'] for r in rows):,.0f} | "
                 f"{statistics.fmean(r['kd_tokens'] for r in rows):,.0f} | "
                 f"{statistics.fmean(r['kd_all_tokens'] for r in rows):,.0f} |")
    m = {k: statistics.fmean(r[k] for r in rows) for k in rows[0] if k not in ("seed",) and
         isinstance(rows[0][k], (int, float))}
    lines += ["", f"Ratios of means, SRD / KD (release) and SRD / KD-all: wall {m['srd_wall_s'] / m['kd_wall_s']:.2f} "
                  f"and {m['srd_wall_s'] / m['kd_all_wall_s']:.2f}, train s {m['srd_train_s'] / m['kd_train_s']:.2f} "
                  f"and {m['srd_train_s'] / m['kd_all_train_s']:.2f}, tokens {m['srd_tokens'] / m['kd_tokens']:.2f} "
                  f"and {m['srd_tokens'] / m['kd_all_tokens']:.2f}."]
    return "\n".join(lines) + "\n"


def release_category_table(evals: dict[str, list[Path]], ranking: Path, train_jsonl: Path, num_parts: int) -> str:
    """Rouge-L per task category of the three arms (mean over seeds) and where the category's training examples fell
    in SRD's easy -> hard parts."""
    per = {k: category_rouge(v) for k, v in evals.items()}
    if set(per["kd"]) <= {"all"}:
        return ""
    parts: dict[str, list[int]] = {}
    if ranking.exists() and train_jsonl.exists():
        train = [json.loads(line) for line in train_jsonl.read_text().splitlines()]
        for line in ranking.read_text().splitlines():
            r = json.loads(line)
            parts.setdefault(train[r["index"]].get("category"), [0] * num_parts)[r["part"]] += 1
    nan = float("nan")
    lines = ["", "Rouge-L by task category (mean over seeds), and the category's training examples in each of SRD's "
                 f"parts, easiest first (part {num_parts - 1} is never trained):", "",
             "| category | SRD | KD (release) | KD-all | SRD − KD | SRD − KD-all | examples per part |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for c in sorted(per["kd"]):
        s, k, a = per["srd"].get(c, nan), per["kd"][c], per["kd_all"].get(c, nan)
        lines.append(f"| {c} | {s:.1f} | {k:.1f} | {a:.1f} | {s - k:+.1f} | {s - a:+.1f} | "
                     f"{' / '.join(map(str, parts.get(c, [])))} |")
    return "\n".join(lines) + "\n"


def release_main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per seed, three arms from the same warm student, ``--lanes`` runs at a time (each one thread)."""
    from concurrent.futures import ThreadPoolExecutor

    from distill.srd_plan import run_stats, select_best, stage_init_path
    from distill.summary import RUN_SUMMARY, read_summary

    out = Path(args.out).resolve()
    py = sys.executable
    gen = ["--no-do-sample", "--max-new-tokens", str(args.max_new_tokens), "--eval-batch-size", "100"]
    teacher = ["--teacher-model-path", args.teacher] + (["--teacher-model-bf16"] if args.teacher_bf16 else [])
    # The study's own flags (data, lengths, precision, validation size) come last: they win over the recipes'.
    tail = ["--data-dir", args.data_dir, "--max-new-tokens", str(args.max_new_tokens), *args.train_args]
    student = args.student
    if args.warm_epochs > 0:  # the stand-in for a pretrained student, as in the sections above
        warm = out / "warm"
        timed([py, "train_sft.py", "--model-path", args.student, "--lr", "1e-3", "--batch-size", "32",
               "--warmup-iters", "20", *tail, "--epochs", str(args.warm_epochs), "--no-eval-gen", "--seed", "0",
               "--save", str(warm / "train"), "--data-dir", args.warm_data_dir or args.data_dir],
              warm / "train.log", warm / "train" / "best", warm / "wall.json", threads=1)
        student = str(warm / "train" / "best")
    r = SRD_RECIPE
    srd_recipe = [*LAUNCHER_FLAGS, "--lr", r["lr"], "--lr-min", r["lr_min"], "--batch-size", r["batch_size"],
                  "--epochs", r["epochs"], *RELEASE_VALID_GEN]

    def arm_srd(seed: int) -> None:
        d = out / "srd" / str(seed)
        # scripts/common/srd.sh's RECIPE; reflection (T 0.01, no_repeat_ngram_size 6, seed 10) is the runner's default.
        # Each seed reflects into its own directory, so its wall time carries its reflection.
        timed([py, "tools/srd_run.py", "--model-path", student, *teacher, "--type", "tfkl", *srd_recipe,
               "--num-stages", "4", "--rank-by", "rrf", "--rrf-k", "60", "--rank-ties", "stable",
               "--stage-init", "last", "--stage-kd-ratio", *r["kd_ratios"], "--temperatures", *r["temperatures"],
               *tail, "--srd-dir", str(d / "srd_data"), "--baseline-dir", str(out / "kd_all" / str(seed) / "stage_2"),
               "--seed", str(seed), "--save", str(d / "train")],
              d / "train.log", d / "train" / "srd_report.json", d / "wall.json", threads=1)

    def arm_kd(seed: int) -> None:
        d, k = out / "kd" / str(seed), KD_RECIPE
        timed([py, "train_distill.py", "--model-path", student, *teacher, "--type", k["type"],
               "--kd-ratio", k["kd_ratio"], "--temperature-kld", "1", *LAUNCHER_FLAGS, "--lr", k["lr"],
               "--lr-min", k["lr_min"], "--batch-size", k["batch_size"], "--epochs", k["epochs"],
               *RELEASE_VALID_GEN, *tail, "--seed", str(seed), "--save", str(d / "train")],
              d / "train.log", d / "train" / RUN_SUMMARY, d / "wall.json", threads=1)

    def arm_kd_all(seed: int) -> None:
        # SRD's stage schedule with every stage on all the examples: 3 chained runs, each from the previous one's last
        # checkpoint, the best over the three by the runner's own rule.
        d = out / "kd_all" / str(seed)
        init = student
        saves = [d / f"stage_{i}" for i in range(len(r["kd_ratios"]))]
        for i, save in enumerate(saves):
            timed([py, "train_distill.py", "--model-path", init, *teacher, "--type", "tfkl",
                   "--kd-ratio", r["kd_ratios"][i], "--temperature-kld", r["temperatures"][i], *srd_recipe, *tail,
                   "--seed", str(seed), "--save", str(save)],
                  d / f"stage_{i}.log", save / RUN_SUMMARY, d / f"stage_{i}.wall.json", threads=1)
            init = stage_init_path(save, "last", read_summary(save))
        select_best(d, saves, [read_summary(s) for s in saves])

    jobs = [(arm, seed) for seed in args.seeds for arm in (arm_srd, arm_kd, arm_kd_all)]
    with ThreadPoolExecutor(max_workers=args.lanes) as pool:
        for f in [pool.submit(arm, seed) for arm, seed in jobs]:
            f.result()

    def evaluate(model: Path, save: Path) -> float:
        if not (save / "summary.json").exists():
            run([py, "evaluate.py", "--model-path", str(model), "--data-dir", args.data_dir, "--eval-name", "valid",
                 "--seeds", "10", "--save", str(save), *gen], save.parent / (save.name + ".log"), threads=1)
        return json.loads((save / "summary.json").read_text())["sets"]["valid"]["rougeL_mean"]

    def wall(p: Path) -> float:
        return json.loads(p.read_text())["wall_seconds"]

    rows = []
    for seed in args.seeds:
        srd_d, kd_d, all_d = (out / a / str(seed) for a in ("srd", "kd", "kd_all"))
        report = json.loads((srd_d / "train" / "srd_report.json").read_text())
        kd = run_stats(kd_d / "train")
        alls = [run_stats(all_d / f"stage_{i}") for i in range(len(r["kd_ratios"]))]
        rows.append({"seed": seed,
                     "srd_rougeL": evaluate(srd_d / "train" / "best", srd_d / "eval"),
                     "kd_rougeL": evaluate(kd_d / "train" / "best", kd_d / "eval"),
                     "kd_all_rougeL": evaluate(all_d / "best", all_d / "eval"),
                     "srd_wall_s": wall(srd_d / "wall.json"),
                     "srd_reflection_s": report["reflection_wall_seconds"] or 0.0,
                     "kd_wall_s": wall(kd_d / "wall.json"),
                     "kd_all_wall_s": sum(wall(all_d / f"stage_{i}.wall.json") for i in range(len(alls))),
                     "srd_train_s": report["total"]["train_seconds"], "kd_train_s": kd["train_seconds"],
                     "kd_all_train_s": sum(s["train_seconds"] for s in alls),
                     "srd_tokens": report["total"]["tokens"], "kd_tokens": kd["tokens"],
                     "kd_all_tokens": sum(s["tokens"] for s in alls),
                     "srd_best": report.get("best"), "kd_best_step": kd["best_step"],
                     "kd_all_best": json.loads((all_d / "best.json").read_text())})
    teacher_rouge = evaluate(Path(args.teacher), out / "teacher" / "eval")
    warm_rouge = evaluate(Path(student), out / "warm" / "eval") if args.warm_epochs > 0 else None
    plan = json.loads((out / "srd" / str(args.seeds[0]) / "train" / "srd_plan.json").read_text())
    shown = os.path.relpath(student) if os.path.isabs(student) else student
    setup = (f"Teacher `{args.teacher}` (Rouge-L {teacher_rouge:.2f}); every arm from `{shown}`"
             + (f" (`{args.student}` after {args.warm_epochs} epochs of SFT on "
                f"`{args.warm_data_dir or args.data_dir}`, Rouge-L {warm_rouge:.2f})" if warm_rouge is not None else "")
             + f"; data `{args.data_dir}`. Flags for every run, last: `{' '.join(args.train_args)}`. Rouge-L: each "
             f"arm's best checkpoint (chosen on sampled validation Rouge-L every epoch, over all stages or epochs), "
             f"scored once greedy on the whole validation split. Wall s: whole processes (SRD: the runner, its "
             f"reflection included; KD-all: its 3 runs summed); train s and tokens: the runs' run_summary.json.")
    table = setup + "\n\n" + release_tables(rows) + release_category_table(
        {"srd": [out / "srd" / str(s) / "eval" for s in args.seeds],
         "kd": [out / "kd" / str(s) / "eval" for s in args.seeds],
         "kd_all": [out / "kd_all" / str(s) / "eval" for s in args.seeds]},
        Path(plan.get("ranking", "")), Path(args.data_dir) / "train.jsonl", 4)
    write_report(out, table, {"rows": rows, "teacher_rougeL": teacher_rouge, "warm_rougeL": warm_rouge,
                              "setup": setup}, args.doc, f"{args.doc_key} release")
    return rows


@exit_on_input_error
def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True, help="initial student checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default="results/srd_study")
    parser.add_argument("--type", default="tfkl", help="a temperature kind (tfkl, trkl, tjsd, ttvd, tsfkl, tsrkl)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=6, help="the plain run's epochs")
    parser.add_argument("--stage-epochs", type=int, help="epochs of each SRD stage (default: --epochs / stages)")
    parser.add_argument("--warm-epochs", type=int, default=1, help="SFT epochs before both arms (0: none)")
    parser.add_argument("--baseline-temperature", type=float, default=1.0,
                        help="the plain run's --temperature-kld (1.0: the KD scripts' default)")
    parser.add_argument("--num-stages", type=int, default=4)
    parser.add_argument("--with-sft", action="store_true",
                        help="also train an SFT student with the plain arm's epochs and evaluation, as a reference")
    parser.add_argument("--keep-stages", type=int, help="stages trained (default --num-stages - 1: the hardest part "
                                                         "dropped; --num-stages: every part used)")
    parser.add_argument("--temperatures", nargs="+", type=float,
                        help="tau of each trained stage (default: linear 1 -> 2, srd_run.py's default)")
    parser.add_argument("--stratify-by", help="srd_run.py --stratify-by: rank and cut each group of this train.jsonl "
                                              "field (e.g. category) separately")
    parser.add_argument("--kd-ratio", type=float, default=0.5, help="both arms' --kd-ratio")
    parser.add_argument("--doc-key", default="srd-study",
                        help="--doc markers: <!-- KEY VARIANT --> ... <!-- /KEY VARIANT --> (another key keeps a "
                             "study with another teacher or data beside this one in the same document)")
    parser.add_argument("--recipe", choices=("study", "release"), default="study",
                        help="release: per seed, SRD with the release's recipe, KD with the release's kd_base.sh and "
                             "KD with SRD's stage recipe on all the data (of the flags above only --teacher, --student, "
                             "--data-dir, --out, --seeds, --warm-epochs, --doc-key and the shared ones apply)")
    parser.add_argument("--lanes", type=int, default=1, help="--recipe release: runs at a time (one thread each)")
    parser.add_argument("--warm-data-dir", help="--recipe release: the warm start's SFT data (default --data-dir); "
                                                "other examples than the distillation set stand in for pretraining")
    add_shared_args(parser, "the srd-study (--doc-key)")
    args = parser.parse_args(argv)
    if args.lanes < 1:
        raise InputError(f"--lanes {args.lanes}: must be >= 1")
    check_paths(args.teacher, args.student, args.data_dir)
    if args.recipe == "release":
        return release_main(args)
    stages = args.num_stages - 1 if args.keep_stages is None else args.keep_stages
    if not 1 <= stages <= args.num_stages:
        raise InputError(f"--keep-stages {args.keep_stages}: must be in 1..{args.num_stages} (--num-stages)")
    if args.stage_epochs is None:
        if args.epochs % stages:
            raise InputError(f"--epochs {args.epochs} does not split into {stages} equal stages; give a multiple of "
                             f"{stages} or --stage-epochs")
        args.stage_epochs = args.epochs // stages
    if args.temperatures is not None and len(args.temperatures) != stages:
        raise InputError(f"--temperatures has {len(args.temperatures)} values; {stages} stages are trained "
                         f"(--num-stages {args.num_stages}, --keep-stages {args.keep_stages})")
    from distill.srd import temperature_schedule
    temperatures = temperature_schedule(stages, args.temperatures)
    from distill.srd_plan import run_stats  # noqa: E402

    out = Path(args.out).resolve()
    py = sys.executable
    gen = ["--no-do-sample", "--max-new-tokens", str(args.max_new_tokens), "--eval-batch-size", "100"]
    common = ["--data-dir", args.data_dir, "--max-new-tokens", str(args.max_new_tokens), *args.train_args]

    teacher = ["--teacher-model-path", args.teacher, "--kd-ratio", str(args.kd_ratio)] \
        + (["--teacher-model-bf16"] if args.teacher_bf16 else [])
    student = args.student
    if args.warm_epochs > 0:
        warm = out / "warm"
        timed([py, "train_sft.py", "--model-path", args.student, *common, "--epochs", str(args.warm_epochs),
               "--no-eval-gen", "--seed", "0", "--save", str(warm / "train")],
              warm / "train.log", warm / "train" / "best", warm / "wall.json")
        student = str(warm / "train" / "best")

    def evaluate(model: Path, save: Path) -> float:
        if not (save / "summary.json").exists():
            run([py, "evaluate.py", "--model-path", str(model), "--data-dir", args.data_dir, "--eval-name", "valid",
                 "--seeds", "10", "--save", str(save), *gen], save.parent / (save.name + ".log"))
        return json.loads((save / "summary.json").read_text())["sets"]["valid"]["rougeL_mean"]

    # Another stage length or temperature schedule is another SRD arm, beside the same plain runs.
    variant = variant_name(args.type, args.stage_epochs, stages, args.num_stages, temperatures, args.stratify_by)
    plain_root = out / f"{args.type}-e{args.epochs}"  # another length is another plain arm
    srd_root = out / f"srd-{variant}"  # variants share the plain arm
    rows, reflection_s = [], None
    for seed in args.seeds:
        plain = plain_root / str(seed)
        plain_wall = timed([py, "train_distill.py", "--model-path", student, *teacher,
                            "--type", args.type, "--temperature-kld", str(args.baseline_temperature), *common,
                            "--epochs", str(args.epochs), "--eval-gen", "--seed", str(seed),
                            "--save", str(plain / "train")],
                           plain / "train.log", plain / "train" / "best", plain / "wall.json")
        srd_save = srd_root / str(seed)
        timed([py, "tools/srd_run.py", "--model-path", student, *teacher,
               "--type", args.type, *common, "--num-stages", str(args.num_stages),
               "--keep-stages", str(stages), "--temperatures", *map(str, temperatures),
               *(["--stratify-by", args.stratify_by] if args.stratify_by else []),
               "--epochs", str(args.stage_epochs),
               # The reflection these studies measured: greedy, no n-gram blocking (the runner now defaults to the
               # release's T = 0.01 sampling with no_repeat_ngram_size 6).
               "--reflect-temperature", "0", "--reflect-no-repeat-ngram-size", "0",
               "--srd-dir", str(out / "srd_data"), "--baseline-dir", str(plain / "train"), "--seed", str(seed),
               "--save", str(srd_save / "train")],
              srd_save / "train.log", srd_save / "train" / "srd_report.json", srd_save / "wall.json")
        report = json.loads((srd_save / "train" / "srd_report.json").read_text())
        if report["reflection_wall_seconds"]:
            reflection_s = report["reflection_wall_seconds"]
        b = run_stats(plain / "train")
        rows.append({"seed": seed,
                     "plain_rougeL": evaluate(plain / "train" / "best", plain / "eval"),
                     "srd_rougeL": evaluate(srd_save / "train" / "best", srd_save / "eval"),
                     "plain_train_s": b["train_seconds"], "srd_train_s": report["total"]["train_seconds"],
                     "plain_wall_s": plain_wall,
                     "srd_wall_s": sum(s["wall_seconds"] or 0.0 for s in report["stages"]),
                     "tokens_ratio": report["total"]["tokens"] / b["tokens"]})
        if args.with_sft:
            sft = out / f"sft-e{args.epochs}" / str(seed)
            timed([py, "train_sft.py", "--model-path", student, *common, "--epochs", str(args.epochs), "--eval-gen",
                   "--seed", str(seed), "--save", str(sft / "train")],
                  sft / "train.log", sft / "train" / "best", sft / "wall.json")
            rows[-1]["sft_rougeL"] = evaluate(sft / "train" / "best", sft / "eval")
    teacher_rouge = evaluate(Path(args.teacher), out / "teacher" / "eval")
    setup = (f"Teacher `{args.teacher}`; students from `{args.student}`"
             + (f" after {args.warm_epochs} epoch(s) of SFT (the same warm start for both arms)"
                if args.warm_epochs else "")
             + f". Both arms: kd-ratio {args.kd_ratio:g}. Plain: `--type {args.type}`, tau {args.baseline_temperature:g}, {args.epochs} epochs on all "
             f"examples. SRD: {args.num_stages} parts, {stages} cumulative stages at tau "
             f"{' -> '.join(f'{t:g}' for t in temperatures)}, {args.stage_epochs} epochs each"
             + (f", ranked and cut within each `{args.stratify_by}`" if args.stratify_by else "")
             + ". Flags for every "
             f"run: `{' '.join(args.train_args)}`. Rouge-L: greedy, validation split. Train s: the trainer's own "
             f"training seconds (no start-up, evaluation or saving); wall s: whole processes, SRD stages summed, "
             f"reflection excluded (below).")
    plan = json.loads((srd_root / str(args.seeds[0]) / "train" / "srd_plan.json").read_text())
    table = render(rows, setup, teacher_rouge, reflection_s) + category_table(
        [plain_root / str(s) / "eval" for s in args.seeds],
        [srd_root / str(s) / "eval" for s in args.seeds], Path(plan.get("ranking", "")),
        Path(args.data_dir) / "train.jsonl", args.num_stages, stages)
    write_report(out, table, {"rows": rows, "teacher_rougeL": teacher_rouge, "reflection_wall_seconds": reflection_s,
                              "setup": setup}, args.doc, f"{args.doc_key} {variant}")
    return rows


if __name__ == "__main__":
    main()
