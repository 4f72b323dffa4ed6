"""What the study scripts (tools/*_study.py) share: their common flags and input checks, running a logged step, a
training run once (resumed when interrupted), greedy evaluation, mean ± std, Rouge-L per task category, writing their
tables into a markdown document; and for the studies that start from an SFT initialisation per seed (MiniLLM, feature
KD), that initialisation, reused or trained."""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from distill.config import MINILLM_TRAIN_DEFAULTS, InputError  # noqa: E402 (torch-free)

RUN_SUMMARY = "run_summary.json"  # distill/summary.py's name (that module is not imported, to keep --help light)
#: train_sft.py flags of the SFT initialisation of the studies that start from one (MiniLLM, feature KD).
DEFAULT_INIT_ARGS = "--epochs 10 --batch-size 32 --lr 1e-3 --warmup-iters 20 --length-pieces 4"


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


def train_once(cmd: list[str], run_dir: Path, threads: int | None = None) -> None:
    """Train ``cmd`` into ``<run_dir>/train`` unless it finished there (run_summary.json); a run the study was
    interrupted in continues (--resume; a new directory just starts). Its process wall seconds go to
    ``<run_dir>/process_wall.json``."""
    if (run_dir / "train" / RUN_SUMMARY).exists():
        return
    t0 = time.time()
    run([*cmd, "--save", str(run_dir / "train"), "--resume"], run_dir / "train.log", threads)
    (run_dir / "process_wall.json").write_text(json.dumps({"wall_seconds": time.time() - t0}))


def greedy_eval(model: Path | str, data_dir: str, run_dir: Path, max_new_tokens: int,
                threads: int | None = None) -> dict[str, float]:
    """Greedy Rouge-L and exact match of ``model`` on the validation split (evaluate.py into ``<run_dir>/eval``,
    skipped when it is there)."""
    summary = run_dir / "eval" / "summary.json"
    if not summary.exists():
        run([sys.executable, "evaluate.py", "--model-path", str(model), "--data-dir", data_dir, "--save",
             str(run_dir / "eval"), "--eval-name", "valid", "--seeds", "10", "--no-do-sample", "--max-new-tokens",
             str(max_new_tokens), "--eval-batch-size", "100"], run_dir / "eval.log", threads)
    ev = json.loads(summary.read_text())["sets"]["valid"]
    return {"rougeL": ev["rougeL_mean"], "exact_match": ev["exact_match_mean"]}


def data_lengths(data_dir: str) -> list[str]:
    """``--max-length`` / ``--max-prompt-length`` from the data's meta.json: the lengths it was processed with."""
    meta_path = Path(data_dir) / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return ([] if "max_length" not in meta else ["--max-length", str(meta["max_length"])]) + \
           ([] if "max_prompt_length" not in meta else ["--max-prompt-length", str(meta["max_prompt_length"])])


def minillm_optimiser() -> list[str]:
    """MiniLLM's optimiser and schedule as train_distill.py flags (its own defaults differ), so a KD arm differs from
    a MiniLLM arm only in what a step computes."""
    d = MINILLM_TRAIN_DEFAULTS
    return ["--batch-size", str(d["batch_size"]), "--warmup-iters", str(d["warmup_iters"]),
            "--lr-schedule", str(d["lr_schedule"]), "--adam-beta1", str(d["adam_beta1"]),
            "--adam-beta2", str(d["adam_beta2"]), "--weight-decay", str(d["weight_decay"])]


def fmt(x: Optional[float], spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


# ------------------------------------------------------------------ studies from an SFT initialisation ---
def init_checkpoint(train: Path) -> Path:
    """The initialisation's checkpoint: the SFT run's best, which must have been chosen by validation loss."""
    summary = json.loads((train / RUN_SUMMARY).read_text())
    best = summary.get("best") or {}
    if best.get("metric") != "valid/loss":
        raise InputError(f"{train}: its best checkpoint was chosen by {best.get('metric')!r}, the initialisation must "
                         f"be chosen by valid/loss (train without --eval-gen)")
    path = train / str(best["step"])
    if not path.is_dir():
        raise InputError(f"{train}: its best checkpoint {path} is missing")
    return path


def check_init_run(train: Path, student: str, data_dir: str, seed: int) -> None:
    """A reused SFT run must be a finished run of this student on this data and seed, validated every epoch
    without generation (so its best is the lowest validation loss over epochs)."""
    if not (train / RUN_SUMMARY).is_file():
        raise InputError(f"--init-from: {train} has no {RUN_SUMMARY} (not a finished run); let it finish or drop "
                         f"--init-from")
    a = json.loads((train / "args.json").read_text())
    want = {"model_path": student, "data_dir": data_dir, "seed": seed, "eval_gen": False, "eval_interval": -1}
    for key, value in want.items():
        if os.path.normpath(str(a.get(key))) != os.path.normpath(str(value)):
            raise InputError(f"--init-from: {train} has {key}={a.get(key)!r}, the study needs {value!r}")


def check_run_dir(train: Path, want: dict[str, Any]) -> None:
    """A run directory of this study made with other settings is refused: skipping it would report the wrong run,
    resuming it would mix two settings."""
    args_json = train / "args.json"
    if not args_json.is_file():
        return
    stored = json.loads(args_json.read_text())
    for key, value in want.items():
        got = stored.get(key)
        same = (got == value if not isinstance(value, float)
                else got is not None and abs(float(got) - value) <= 1e-12 * max(1.0, abs(value)))
        if not same:
            raise InputError(f"{train} was run with {key}={got!r}, this study asks for {value!r}; pass another --out")


def initialisations(args: argparse.Namespace, out: Path) -> dict[int, Path]:
    """Per seed, the SFT run that is its initialisation: ``--init-from DIR``'s ``DIR/<seed>/train`` (checked now: a
    finished run of this student, data and seed, its best by validation loss) or ``<out>/init/<seed>/train``, which
    the study trains."""
    runs = {s: (Path(args.init_from) / str(s) / "train" if args.init_from else out / "init" / str(s) / "train")
            for s in args.seeds}
    if args.init_from:
        for s, train in runs.items():
            check_init_run(train, args.student, args.data_dir, s)
            init_checkpoint(train)
    return runs


def check_init_args(init_args: str) -> None:
    clash = sorted({a.split("=")[0] for a in shlex.split(init_args)}
                   & {"--seed", "--save", "--model-path", "--data-dir", "--eval-interval", "--eval-gen",
                      "--overwrite", "--resume"})
    if clash:
        raise InputError(f"--init-args: {', '.join(clash)} is set by the study (the initialisation is validated "
                         f"every epoch on the loss, per seed, in <out>/init/<seed>)")


def add_pair_args(parser: argparse.ArgumentParser, out: str) -> None:
    """The studies that start from an SFT initialisation: the pair, the data and the output folder."""
    parser.add_argument("--teacher", default="results/teacher_e20/best")
    parser.add_argument("--student", default="checkpoints/tiny-gpt2-student",
                        help="the student before SFT (the initialisation is trained from it)")
    parser.add_argument("--data-dir", default="processed_data/synth/full/gpt2")
    parser.add_argument("--lm-data-dir", default="processed_data/synth_pretrain/full/gpt2",
                        help="pretraining corpus of the MiniLLM runs (tools/process_data_pretrain.py output)")
    parser.add_argument("--out", default=out)


def add_init_args(parser: argparse.ArgumentParser) -> None:
    """The initialisation (initialisations()) and how many runs at once."""
    parser.add_argument("--init-args", default=DEFAULT_INIT_ARGS,
                        help="train_sft.py flags of the initialisation (one string)")
    parser.add_argument("--init-from", help="reuse finished SFT runs DIR/<seed>/train as the initialisations")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once; each gets cores/jobs threads")


def sft_initialiser(args: argparse.Namespace, out: Path, runs: dict[int, Path], common: list[str],
                    threads: int | None) -> Callable[[int], Path]:
    """``checkpoint(seed)``: the seed's initialisation (its SFT run's best by validation loss), trained first into
    ``<out>/init/<seed>`` when the study does not reuse ``--init-from``'s (train_sft.py from ``--student`` with
    ``--init-args``, validated every epoch on the loss, the study's flags after --). The runs of a seed wait for its
    one initialisation."""
    locks = {s: threading.Lock() for s in runs}

    def checkpoint(seed: int) -> Path:
        with locks[seed]:
            if not args.init_from:
                train_once([sys.executable, "train_sft.py", "--model-path", args.student, *common,
                            *shlex.split(args.init_args), "--eval-interval", "-1", "--no-eval-gen", *args.train_args,
                            "--seed", str(seed)], out / "init" / str(seed), threads)
            return init_checkpoint(runs[seed])
    return checkpoint
