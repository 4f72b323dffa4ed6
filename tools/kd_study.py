"""SFT vs every KD kind on one teacher/student pair, over seeds: Rouge-L and validation divergence to the teacher.

For each seed it trains the SFT student, one student per ``--kinds`` entry (train_distill.py, same steps and
hyper-parameters) and, with ``--pure-kd``, an fkl student with ``--kd-ratio 1`` (no ground-truth loss); then scores
each by greedy Rouge-L on the validation split and by its divergence to the teacher in every direction. Runs whose
outputs exist are skipped, so an interrupted study resumes. Writes ``<out>/report.md`` and ``<out>/report.json``.

    python tools/kd_study.py --teacher results/quickstart/sft-teacher/best \
        --student checkpoints/tiny-gpt2-student --data-dir processed_data/synth/full/gpt2 \
        --out results/kd_study --seeds 1 2 3 --epochs 8 -- --lr 1e-3 --batch-size 32
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from distill.config import InputError, exit_on_input_error  # noqa: E402

DEFAULT_KINDS = ["fkl", "rkl", "jsd", "tvd", "sfkl", "srkl"]
# The divergence each kind minimises, measured at tau = 1 for the "closer to the teacher than SFT" check.
OWN_DIRECTION = {"fkl": "fkl", "kd": "fkl", "tfkl": "fkl", "rkl": "rkl", "trkl": "rkl", "jsd": "jsd", "tjsd": "jsd",
                 "tvd": "tvd", "ttvd": "tvd", "ttvdf": "tvd", "sfkl": "sfkl", "tsfkl": "sfkl", "srkl": "srkl",
                 "tsrkl": "srkl"}


def run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    print("+", " ".join(cmd), flush=True)
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise SystemExit(f"error: a run failed (exit {proc.returncode}); see {log}")


def mean_std(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.2f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.2f}"


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
    parser.add_argument("--pure-kd", action="store_true", help="also train fkl students with --kd-ratio 1")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("train_args", nargs="*", help="after --: flags for every training run")
    args = parser.parse_args(argv)
    for p in (args.teacher, args.student, args.data_dir):
        if not Path(p).exists():
            raise InputError(f"{p} does not exist")
    out = Path(args.out)
    py = sys.executable
    common = ["--data-dir", args.data_dir, "--epochs", str(args.epochs), "--no-eval-gen",
              "--max-new-tokens", str(args.max_new_tokens), *args.train_args]
    runs: dict[str, list[str]] = {"sft": [py, "train_sft.py", "--model-path", args.student]}
    for kind in args.kinds:
        runs[kind] = [py, "train_distill.py", "--model-path", args.student, "--teacher-model-path", args.teacher,
                      "--type", kind, "--kd-ratio", str(args.kd_ratio), "--temperature-kld", str(args.temperature_kld)]
    if args.pure_kd:
        runs["fkl-pure"] = [py, "train_distill.py", "--model-path", args.student, "--teacher-model-path",
                            args.teacher, "--type", "fkl", "--kd-ratio", "1.0"]
    directions = sorted({OWN_DIRECTION[k] for k in args.kinds} | {"fkl"})
    results: dict[str, dict[int, dict]] = {}
    for seed in args.seeds:
        for name, cmd in runs.items():
            d = out / name / str(seed)
            if not (d / "train" / "best").exists():
                run([*cmd, *common, "--seed", str(seed), "--save", str(d / "train")], d / "train.log")
            if not (d / "eval" / "summary.json").exists():
                run([py, "evaluate.py", "--model-path", str(d / "train" / "best"), "--data-dir", args.data_dir,
                     "--eval-name", "valid", "--save", str(d / "eval"), "--seeds", "10", "--no-do-sample",
                     "--max-new-tokens", str(args.max_new_tokens), "--eval-batch-size", "100"], d / "eval.log")
            if not (d / "divergence.json").exists():
                run([py, "tools/eval_divergence.py", "--student", str(d / "train" / "best"), "--teacher",
                     args.teacher, "--data-dir", args.data_dir, "--kinds", *directions,
                     "--out", str(d / "divergence.json")], d / "divergence.log")
            summary = json.loads((d / "eval" / "summary.json").read_text())
            results.setdefault(name, {})[seed] = {
                "rougeL": summary["sets"]["valid"]["rougeL_mean"],
                "divergence": json.loads((d / "divergence.json").read_text())}
    teacher_eval = out / "teacher" / "eval"
    if not (teacher_eval / "summary.json").exists():
        run([py, "evaluate.py", "--model-path", args.teacher, "--data-dir", args.data_dir, "--eval-name", "valid",
             "--save", str(teacher_eval), "--seeds", "10", "--no-do-sample", "--max-new-tokens",
             str(args.max_new_tokens), "--eval-batch-size", "100"], out / "teacher" / "eval.log")
    teacher_rouge = json.loads((teacher_eval / "summary.json").read_text())["sets"]["valid"]["rougeL_mean"]
    lines = [f"Teacher `{args.teacher}`: Rouge-L {teacher_rouge:.2f} (greedy, validation split). "
             f"Students from `{args.student}`, {args.epochs} epochs, seeds {args.seeds}, kd-ratio {args.kd_ratio}, "
             f"tau {args.temperature_kld} for t* kinds.", "",
             "| student | Rouge-L (mean ± std) | own-direction divergence to teacher | SFT student's, same direction |"
             " closer than SFT (seeds) |", "|---|---:|---:|---:|---:|"]
    sft = results["sft"]
    for name, per_seed in results.items():
        rouge = mean_std([r["rougeL"] for r in per_seed.values()])
        direction = "fkl" if name in ("sft", "fkl-pure") else OWN_DIRECTION[name]
        own = [r["divergence"][direction] for r in per_seed.values()]
        ref = [sft[s]["divergence"][direction] for s in per_seed]
        closer = sum(o < r for o, r in zip(own, ref))
        lines.append(f"| {name} | {rouge} | {direction} {statistics.fmean(own):.4f} | {statistics.fmean(ref):.4f} | "
                     f"{'—' if name == 'sft' else f'{closer}/{len(own)}'} |")
    report = "\n".join(lines) + "\n"
    (out / "report.md").write_text(report)
    (out / "report.json").write_text(json.dumps({"teacher_rougeL": teacher_rouge, "runs": results}, indent=2))
    print(report)
    return results


if __name__ == "__main__":
    main()
