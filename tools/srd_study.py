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
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from distill.config import InputError, exit_on_input_error  # noqa: E402
from study_common import add_shared_args, category_rouge, check_paths, mean_std, run, write_doc  # noqa: E402



def timed(cmd: list[str], log: Path, done: Path, stamp: Path) -> float:
    """Run ``cmd`` unless ``done`` exists; its wall seconds are kept in ``stamp`` (a resumed study reuses them). A
    training run the study was interrupted in continues: ``--resume`` (a new directory just starts; the SRD runner
    resumes by itself and drops the flag)."""
    if not done.exists():
        cmd = [*cmd, "--resume"]
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"wall_seconds": run(cmd, log)}))
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
    add_shared_args(parser, "the srd-study (--doc-key)")
    args = parser.parse_args(argv)
    check_paths(args.teacher, args.student, args.data_dir)
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"rows": rows, "teacher_rougeL": teacher_rouge,
                                                 "reflection_wall_seconds": reflection_s, "setup": setup}, indent=2))
    (out / "report.md").write_text(table)
    if args.doc:
        write_doc(Path(args.doc), table, f"{args.doc_key} {variant}")
    print(table)
    return rows


if __name__ == "__main__":
    main()
