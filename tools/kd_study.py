"""SFT vs every KD kind on one teacher/student pair, over seeds: Rouge-L and validation divergence to the teacher.

For each seed it trains the SFT student, one student per ``--kinds`` entry (train_distill.py, same steps and
hyper-parameters) and, for each ``--pure-kinds`` entry, a student with ``--kd-ratio 1`` (no ground-truth loss: it
minimises that divergence alone, whatever its scale next to the cross-entropy); then scores
each by greedy Rouge-L on the validation split, by its divergence to the teacher in every direction and by
Rouge-L per task category; the teacher's token calibration and the initial student's score go beside them. Runs
whose outputs exist are skipped and an interrupted training run continues (``--resume``), so an interrupted study
resumes. Writes ``<out>/report.md`` and
``<out>/report.json``. The study of docs/kd_results.md:

    python tools/kd_study.py --teacher results/quickstart/sft-teacher/best \
        --student checkpoints/tiny-gpt2-student --data-dir processed_data/synth/full/gpt2 --out results/kd_study \
        --seeds 1 2 3 --kinds fkl rkl jsd tvd sfkl srkl tfkl --pure-kinds fkl rkl jsd --epochs 5 --teacher-bf16 --jobs 2 \
        --doc docs/kd_results.md -- \
        --batch-size 32 --lr 1e-3 --warmup-iters 20 --max-length 256 --eval-batch-size 100 \
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

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]

from distill.config import InputError, exit_on_input_error  # noqa: E402
from distill.losses import DIVERGENCES  # noqa: E402
from study_common import add_shared_args, category_rouge, check_paths, mean_std, run, write_doc  # noqa: E402

DEFAULT_KINDS = ["fkl", "rkl", "jsd", "tvd", "sfkl", "srkl"]
# The divergence each kind minimises: the kind itself, aliases resolved by the loss registry; the t* kinds are
# measured at their tau.
OWN_DIRECTION = {kind: spec.name for kind, spec in DIVERGENCES.items()}


def divergence_missing(path: Path, name: str, directions: list[str]) -> bool:
    """Whether run ``name``'s ``divergence.json`` must be (re)measured: absent, or without a direction the table needs
    (the SFT student is the reference in every direction; a KD student needs its own, and fkl). A study rerun with
    more kinds, or one measured before the t* kinds were judged at their tau, re-measures only what lacks a value."""
    need = set(directions) if name == "sft" else {OWN_DIRECTION[name.removesuffix("-pure")], "fkl"}
    return not path.exists() or not need <= set(json.loads(path.read_text()))


@exit_on_input_error
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--student", required=True, help="initial student checkpoint")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default="results/kd_study")
    parser.add_argument("--kinds", nargs="+", default=DEFAULT_KINDS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--kd-ratio", type=float, default=0.5)
    parser.add_argument("--temperature-kld", type=float, default=2.0, help="tau of the t* kinds")
    parser.add_argument("--pure-kinds", nargs="*", default=[], help="also train students of these kinds with "
                                                                    "--kd-ratio 1 (runs named <kind>-pure)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once; each gets cores/jobs threads (tiny models use 2 threads poorly)")
    parser.add_argument("--doc-key", default="kd-study", help="--doc markers: <!-- KEY --> ... <!-- /KEY -->")
    add_shared_args(parser, "<!-- kd-study --> (--doc-key)")
    args = parser.parse_args(argv)
    check_paths(args.teacher, args.student, args.data_dir)
    if args.jobs < 1:
        raise InputError(f"--jobs {args.jobs}: must be at least 1")
    out = Path(args.out)
    py = sys.executable
    threads = max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None
    common = ["--data-dir", args.data_dir, "--epochs", str(args.epochs), "--no-eval-gen",
              "--max-new-tokens", str(args.max_new_tokens), *args.train_args]
    teacher_flags = ["--teacher-model-path", args.teacher] + (["--teacher-model-bf16"] if args.teacher_bf16 else [])
    runs: dict[str, list[str]] = {"sft": [py, "train_sft.py", "--model-path", args.student]}
    for kind in args.kinds:
        runs[kind] = [py, "train_distill.py", "--model-path", args.student, *teacher_flags,
                      "--type", kind, "--kd-ratio", str(args.kd_ratio), "--temperature-kld", str(args.temperature_kld)]
    for kind in args.pure_kinds:
        runs[f"{kind}-pure"] = [py, "train_distill.py", "--model-path", args.student, *teacher_flags,
                                "--type", kind, "--kd-ratio", "1.0", "--temperature-kld", str(args.temperature_kld)]
    bad = [k for k in [*args.kinds, *args.pure_kinds] if k not in OWN_DIRECTION]
    if bad:
        raise InputError(f"--kinds/--pure-kinds: unknown {bad}; valid: {', '.join(OWN_DIRECTION)}")
    directions = sorted({OWN_DIRECTION[k] for k in [*args.kinds, *args.pure_kinds]} | {"fkl"})
    gen = ["--eval-name", "valid", "--seeds", "10", "--no-do-sample", "--max-new-tokens", str(args.max_new_tokens),
           "--eval-batch-size", "100"]

    def one(name: str, seed: int) -> None:
        """Train, evaluate and measure the divergence of one student; each step is skipped if its output exists."""
        d = out / name / str(seed)
        if not (d / "train" / "best").exists():
            # --resume: a run the study was interrupted in continues (a new directory just starts).
            run([*runs[name], *common, "--seed", str(seed), "--save", str(d / "train"), "--resume"], d / "train.log",
                threads)
        if not (d / "eval" / "summary.json").exists():
            run([py, "evaluate.py", "--model-path", str(d / "train" / "best"), "--data-dir", args.data_dir,
                 "--save", str(d / "eval"), *gen], d / "eval.log", threads)
        div = d / "divergence.json"
        if divergence_missing(div, name, directions):
            run([py, "tools/eval_divergence.py", "--student", str(d / "train" / "best"), "--teacher",
                 args.teacher, "--data-dir", args.data_dir, "--kinds", *directions,
                 "--temperature", str(args.temperature_kld), "--out", str(div)], d / "divergence.log", threads)

    def reference_evals() -> None:
        """The teacher's and the initial student's scores, and the teacher's calibration, once."""
        for name, model in (("teacher", args.teacher), ("initial", args.student)):
            if not (out / name / "eval" / "summary.json").exists():
                run([py, "evaluate.py", "--model-path", model, "--data-dir", args.data_dir,
                     "--save", str(out / name / "eval"), *gen], out / name / "eval.log", threads)
        if not (out / "teacher" / "calibration.json").exists():
            run([py, "tools/eval_divergence.py", "--student", args.teacher, "--data-dir", args.data_dir, "--kinds",
                 "--calibration", "--out", str(out / "teacher" / "calibration.json")],
                out / "teacher" / "calibration.log", threads)

    # Seed-major order, so an interrupted study has whole seeds done rather than whole kinds.
    tasks = [(name, seed) for seed in args.seeds for name in runs]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(reference_evals)] + [pool.submit(one, name, seed) for name, seed in tasks]
        for f in futures:
            f.result()
    results: dict[str, dict[int, dict]] = {}
    for name, seed in tasks:
        d = out / name / str(seed)
        summary = json.loads((d / "eval" / "summary.json").read_text())
        results.setdefault(name, {})[seed] = {
            "rougeL": summary["sets"]["valid"]["rougeL_mean"],
            "divergence": json.loads((d / "divergence.json").read_text())}
    def rouge_of(name: str) -> float:
        return json.loads((out / name / "eval" / "summary.json").read_text())["sets"]["valid"]["rougeL_mean"]

    teacher_rouge, initial_rouge = rouge_of("teacher"), rouge_of("initial")
    cal = json.loads((out / "teacher" / "calibration.json").read_text())["calibration"]["student"]
    lines = [f"Teacher `{args.teacher}`: Rouge-L {teacher_rouge:.2f} (greedy, validation split); on the validation "
             f"response tokens: top-1 accuracy {cal['accuracy']:.3f}, mean top-1 probability {cal['confidence']:.3f},"
             f" ECE {cal['ece']:.3f}, entropy {cal['entropy']:.2f} nats, NLL {cal['nll']:.3f}. "
             f"Students from `{args.student}` (before training: Rouge-L {initial_rouge:.2f}), {args.epochs} epochs, seeds "
             f"{args.seeds}, kd-ratio {args.kd_ratio} (`<kind>-pure`: 1.0, no ground-truth loss), "
             f"tau {args.temperature_kld} for t* kinds. Flags for every run: `{' '.join(args.train_args)}`.", "",
             "| student | Rouge-L (mean ± std) | own-direction divergence to teacher | SFT student's, same direction |"
             " closer than SFT (seeds) |", "|---|---:|---:|---:|---:|"]
    sft = results["sft"]
    for name, per_seed in results.items():
        rouge = mean_std([r["rougeL"] for r in per_seed.values()])
        direction = "fkl" if name == "sft" else OWN_DIRECTION[name.removesuffix("-pure")]
        own = [r["divergence"][direction] for r in per_seed.values()]
        ref = [sft[s]["divergence"][direction] for s in per_seed]
        closer = sum(o < r for o, r in zip(own, ref))
        lines.append(f"| {name} | {rouge} | {direction} {statistics.fmean(own):.4f} | {statistics.fmean(ref):.4f} | "
                     f"{'—' if name == 'sft' else f'{closer}/{len(own)}'} |")
    lines += ["", "Rouge-L by task category (mean over seeds; teacher and initial student: one greedy run):", ""]
    cats = {"teacher": category_rouge([out / "teacher" / "eval"]),
            "initial": category_rouge([out / "initial" / "eval"])}
    cats.update({name: category_rouge([out / name / str(s) / "eval" for s in per_seed])
                 for name, per_seed in results.items()})
    names = list(cats)
    lines += ["| category | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for c in sorted(cats["teacher"]):
        lines.append(f"| {c} | " + " | ".join(f"{cats[n].get(c, float('nan')):.1f}" for n in names) + " |")
    report = "\n".join(lines) + "\n"
    (out / "report.md").write_text(report)
    if args.doc:
        write_doc(Path(args.doc), report, args.doc_key)
    (out / "report.json").write_text(json.dumps({"teacher_rougeL": teacher_rouge, "initial_rougeL": initial_rouge,
                                                 "teacher_calibration": cal, "runs": results, "categories": cats},
                                                indent=2))
    print(report)
    return results


if __name__ == "__main__":
    main()
