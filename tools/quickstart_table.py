"""Prints the quick start's results table from its output directory (results/quickstart by default):
one row per trained model — parameters, Rouge-L, exact match on the built-in validation set, training wall time —
and writes the same rows to <dir>/table.json and <dir>/table.md."""
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


def read_rows(qs: Path) -> list[dict]:
    times = {}
    tsv = qs / "timings.tsv"
    if tsv.exists():
        for line in tsv.read_text().splitlines():
            name, secs = line.split("\t")
            times[name] = int(secs)
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
    print(f"total wall time of the stages run this time: {total} s")
    (qs / "table.json").write_text(json.dumps(rows, indent=2))
    (qs / "table.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
