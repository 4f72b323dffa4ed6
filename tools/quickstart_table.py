"""Prints the quick start's results table from its output directory (results/quickstart by default):
one row per trained model — parameters, Rouge-L, exact match on the built-in validation set, training wall time —
and writes the same rows to <dir>/table.json and <dir>/table.md; then where the time went: per stage its wall time,
the part spent in the training loop (or in generation, for an evaluation) and the rest (process start-up and
imports, model loading, saving, the final evaluation), into <dir>/breakdown.{json,md}."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROWS = [  # (run directory, label) in display order; absent runs are left out
    ("sft-teacher", "teacher SFT"),
    ("sft-student", "student SFT"),
    ("kd-fkl", "student KD (fkl)"),
    ("kd-fkl-selective", "student KD (fkl, top-50% tokens)"),
    ("kd-tfkl", "student SFT, then KD (tfkl)"),
    ("srd-tfkl", "student SFT, then SRD + tfkl"),
]


def read_times(qs: Path) -> dict[str, int]:
    """Stage name -> wall seconds, as scripts/quickstart.sh recorded them (the latest run of each stage)."""
    times = {}
    tsv = qs / "timings.tsv"
    if tsv.exists():
        for line in tsv.read_text().splitlines():
            name, secs = line.split("\t")
            times[name] = int(secs)
    return times


def loop_seconds(run_dir: Path) -> float | None:
    """Seconds a training run spent in its loop (the trainer's closing ``done:`` line in log.txt)."""
    log = run_dir / "log.txt"
    if not log.exists():
        return None
    for line in reversed(log.read_text().splitlines()):
        if "] done: " in line:
            return float(json.loads(line.split("] done: ", 1)[1])["train_seconds"])
    return None


def read_breakdown(qs: Path) -> list[dict]:
    """Per stage: wall seconds, seconds of real work (training loop, generation, SRD reflection), and the rest."""
    out = []
    for name, wall in read_times(qs).items():
        work, what = None, ""
        if name.startswith("eval-"):
            results = sorted((qs / "eval" / name[len("eval-"):]).glob("*/*/results.json"))
            if results:
                work, what = sum(json.loads(p.read_text())["seconds"] for p in results), "generation"
        elif (qs / name / "srd_report.json").exists():
            report = json.loads((qs / name / "srd_report.json").read_text())
            loop = report["total"]["train_seconds"] or 0.0
            work = loop + report["reflection_wall_seconds"]
            what = f"reflection {report['reflection_wall_seconds']:.0f} s + stage loops {loop:.0f} s"
        elif (qs / name).is_dir():
            work, what = loop_seconds(qs / name), "training loop"
        out.append({"stage": name, "wall_seconds": wall, "work_seconds": work, "work": what,
                    "rest_seconds": None if work is None else wall - work})
    return out


def read_rows(qs: Path) -> list[dict]:
    times = read_times(qs)
    rows = []
    for run, label in ROWS:
        summary = qs / "eval" / run / "summary.json"
        if not summary.exists():
            continue
        s = json.loads(summary.read_text())
        (set_name, scores), = list(s["sets"].items())[:1]
        args = json.loads((qs / run / "args.json").read_text()) if (qs / run / "args.json").exists() else {}
        params = None
        # A staged run (SRD) logs into its stages' directories.
        for log in (qs / run / "log.txt", qs / run / "stage_0" / "log.txt"):
            if params is None and log.exists():
                for line in log.read_text().splitlines():
                    if "parameters:" in line:
                        params = int(line.split("parameters:")[1].split()[0].replace(",", ""))
                        break
        rows.append({"run": run, "model": label, "params": params, "set": set_name,
                     "rougeL": scores["rougeL_mean"], "exact_match": scores["exact_match_mean"],
                     "examples": scores["num_examples"], "train_seconds": times.get(run),
                     "epochs": args.get("epochs")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dir", nargs="?", default="results/quickstart")
    qs = Path(parser.parse_args().dir)
    rows = read_rows(qs)
    if not rows:
        raise SystemExit(f"error: no evaluated run under {qs}/eval — run bash scripts/quickstart.sh first")
    table = Table(title=f"Quick start — built-in synthetic data ({rows[0]['set']}, {rows[0]['examples']} valid "
                        f"examples, greedy)")
    for col in ("model", "params", "Rouge-L", "exact match", "train wall time"):
        table.add_column(col, justify="left" if col == "model" else "right")
    md = ["| model | params | Rouge-L | exact match | train wall time |", "|---|---:|---:|---:|---:|"]
    for r in rows:
        params = f"{r['params'] / 1e6:.2f}M" if r["params"] else "?"
        wall = f"{r['train_seconds']} s" if r["train_seconds"] is not None else "(earlier run)"
        cells = (r["model"], params, f"{r['rougeL']:.2f}", f"{r['exact_match']:.2f}", wall)
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    total = sum(int(line.split("\t")[1]) for line in (qs / "timings.tsv").read_text().splitlines()) \
        if (qs / "timings.tsv").exists() else 0
    Console(width=120).print(table)
    parts = read_breakdown(qs)
    detail = Table(title="Where the time went (per stage; 'rest' = process start-up and imports, loading, saving, "
                         "final evaluation)")
    for col in ("stage", "wall", "work", "of which", "rest"):
        detail.add_column(col, justify="left" if col in ("stage", "of which") else "right")
    md2 = ["| stage | wall | work | of which | rest |", "|---|---:|---:|---|---:|"]
    for b in parts:
        work = f"{b['work_seconds']:.0f} s" if b["work_seconds"] is not None else ""
        rest = f"{b['rest_seconds']:.0f} s" if b["rest_seconds"] is not None else ""
        cells = (b["stage"], f"{b['wall_seconds']} s", work, b["work"], rest)
        detail.add_row(*cells)
        md2.append("| " + " | ".join(cells) + " |")
    Console(width=120).print(detail)
    (qs / "breakdown.json").write_text(json.dumps(parts, indent=2))
    (qs / "breakdown.md").write_text("\n".join(md2) + "\n")
    print(f"stage times recorded, added up: {total} s (stages run two at a time overlap, so the run's wall time is "
          f"shorter; scripts/quickstart.sh prints it last)")
    (qs / "table.json").write_text(json.dumps(rows, indent=2))
    (qs / "table.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
