"""What the study scripts (tools/kd_study.py, tools/srd_study.py) share: their common flags and input checks, running
a logged step, mean ± std, Rouge-L per task category, and writing their tables into a markdown document."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(cmd: list[str], log: Path, threads: int | None = None) -> float:
    """Run ``cmd`` from the repo root with its output in ``log``; returns its wall seconds, exits on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    print("+", " ".join(cmd), flush=True)
    env = dict(os.environ)
    # Runs may share the cores: do not let idle OpenMP threads spin on the others'; pin each to its share.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.time()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"error: a run failed (exit {proc.returncode}); see {log}")
    return time.time() - t0


def mean_std(xs: list[float], spec: str = ".2f") -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{format(statistics.fmean(xs), spec)} ± {format(sd, spec)}"


def write_doc(doc: Path, table: str, key: str) -> None:
    """Put ``table`` between ``<!-- KEY -->`` and ``<!-- /KEY -->`` in ``doc``, replacing what was there (appended
    with the markers if they are absent), so prose around the table survives a rerun and each study keeps its block."""
    begin, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    text = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{table}{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = (text.rstrip() + "\n\n" if text else "") + block + "\n"
    doc.write_text(text)


def write_report(out: Path, table: str, report: dict, doc: str | None, key: str) -> None:
    """A study's outputs: ``<out>/report.json`` and ``<out>/report.md``, the table into ``doc`` (``--doc``) between
    its markers, and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(table)
    if doc:
        write_doc(Path(doc), table, key)
    print(table)


def add_shared_args(parser: argparse.ArgumentParser, doc_markers: str) -> None:
    """The flags every study takes after its own: generation length, bf16 teacher, the document, training flags."""
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--teacher-bf16", action="store_true", help="run the teacher in bf16 in the KD runs")
    parser.add_argument("--doc", help=f"markdown file to write the report into (between {doc_markers} markers)")
    parser.add_argument("train_args", nargs="*", help="after --: flags for every training run")


def check_paths(*paths: str) -> None:
    """Stop with one line, before any run, when an input does not exist."""
    from distill.config import InputError

    for p in paths:
        if not Path(p).exists():
            raise InputError(f"{p} does not exist")


def category_rouge(eval_dirs: list[Path]) -> dict[str, float]:
    """Mean Rouge-L per task category over the answers of ``eval_dirs`` (evaluate.py outputs; data with a
    ``category`` field, like the built-in synthetic set)."""
    scores: dict[str, list[float]] = {}
    for d in eval_dirs:
        for f in sorted(d.glob("*/*/answers.jsonl")):
            for line in f.read_text().splitlines():
                rec = json.loads(line)
                scores.setdefault(rec.get("category") or "all", []).append(rec["rougeL"])
    return {c: statistics.fmean(v) for c, v in scores.items()}


def own_generation_scores(run_dir: Path) -> dict:
    """A scored model's numbers (the on-policy and MiniLLM studies): greedy Rouge-L and exact match of
    ``<run_dir>/eval`` (evaluate.py), and from ``<run_dir>/divergence.json`` (tools/eval_divergence.py
    --own-generations) the reverse KL on the references and on the model's own answers, their length and EOS share."""
    ev = json.loads((run_dir / "eval" / "summary.json").read_text())["sets"]["valid"]
    div = json.loads((run_dir / "divergence.json").read_text())
    own = div["own_generations"]
    return {"rougeL": ev["rougeL_mean"], "exact_match": ev["exact_match_mean"], "tf_rkl": div.get("rkl"),
            "own_rkl": own["rkl"], "own_tokens": own["mean_answer_tokens"], "own_eos": own["ended_with_eos"]}
