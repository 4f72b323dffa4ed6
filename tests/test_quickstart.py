"""scripts/quickstart.sh end to end with a stand-in PYTHON: the commands it would run, for a machine whose resolved
precision is fp32 (a CPU without native bf16) and one where it is bf16.

The stub records every command line (one append each: stages run two at a time), answers the launchers' hardware probe with ``STUB_PRECISION`` and creates each
run's ``--save``/best directory, so every stage runs (none is skipped) and the next one finds its inputs. The real
quick start is measured in docs/quickstart.md; this test only checks what it asks for, in a couple of seconds.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

STUB = r'''#!/usr/bin/env bash
if [[ "$1" == "-c" ]]; then echo 0; exit 0; fi
if [[ "$1 $2" == "-m distill.hardware" ]]; then
    echo "NUM_GPUS=0; PRECISION_RESOLVED=$STUB_PRECISION; PRECISION_INFO=stub"; exit 0
fi
line=$(printf '%s\x1f' "$@"); printf '%s\n' "$line" >> "$CALLS"  # one write: paired stages append at once
prev=""
for a in "$@"; do
    if [[ "$prev" == "--save" ]]; then mkdir -p "$a/best"; fi
    prev="$a"
done
'''
ENTRIES = ("train_sft.py", "train_distill.py", "evaluate.py", "tools/srd_run.py")


def quickstart_calls(tmp_path: Path, precision: str, env: dict[str, str]) -> list[tuple[str, list[str]]]:
    base = tmp_path / f"repo-{precision}"
    base.mkdir()
    for d in ("scripts", "configs", "tools"):
        (base / d).symlink_to(REPO_ROOT / d)
    # The inputs the data, model and processing stages would make; those stages are skipped.
    for d in ("checkpoints/tiny-gpt2-teacher", "checkpoints/tiny-gpt2-student", "processed_data/synth/full/gpt2"):
        (base / d).mkdir(parents=True)
    for f in ("data/synth/valid.jsonl", "processed_data/synth/full/gpt2/train_0.bin",
              "processed_data/synth/full/gpt2/valid_0.idx"):
        (base / f).parent.mkdir(parents=True, exist_ok=True)
        (base / f).touch()
    (base / "data/synth/train.jsonl").write_text("{}\n" * 1000)  # 1000 examples: 32 steps of 32 per epoch
    stub, calls = tmp_path / f"python-{precision}", tmp_path / f"calls-{precision}"
    stub.write_text(STUB)
    stub.chmod(0o755)
    run_env = {k: v for k, v in env.items() if k not in ("DISTILL_HW_FOR", "PRECISION", "OMP_NUM_THREADS")}
    run_env.update(PYTHON=str(stub), CALLS=str(calls), STUB_PRECISION=precision)
    proc = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "quickstart.sh"), str(base)], env=run_env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = []
    for line in calls.read_text().split("\n")[:-1]:
        argv = line.split("\x1f")[:-1]
        entry = next((a for a in argv if a in ENTRIES), None)
        if entry is not None:
            out.append((entry, argv[argv.index(entry) + 1:]))
    return out


def last(argv: list[str], flag: str) -> str | None:
    """The value of the last ``flag`` (argparse keeps the last one)."""
    values = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
    return values[-1] if values else None


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_quickstart_follows_the_resolved_precision(precision: str, tmp_path: Path,
                                                   subprocess_env: dict[str, str]) -> None:
    calls = quickstart_calls(tmp_path, precision, subprocess_env)
    by_save = {Path(last(a, "--save")).name: (e, a) for e, a in calls if e != "evaluate.py"}
    assert sorted(by_save) == ["kd-fkl", "kd-fkl-selective", "kd-tfkl", "sft-student", "sft-teacher", "srd-tfkl"]
    assert sum(e == "evaluate.py" for e, _ in calls) == 6

    # The teacher trains in the resolved precision; the students' matrices are too small for bf16 to pay.
    _, teacher = by_save["sft-teacher"]
    assert Path(last(teacher, "--deepspeed-config")).name == f"ds_config_zero1_{precision}.json"
    for run in ("sft-student", "kd-fkl", "kd-fkl-selective", "kd-tfkl", "srd-tfkl"):
        assert Path(last(by_save[run][1], "--deepspeed-config")).name == "ds_config_zero0_fp32.json", run
    # Every KD run (and SRD's stages) runs the frozen teacher in the resolved precision.
    for run in ("kd-fkl", "kd-fkl-selective", "kd-tfkl", "srd-tfkl"):
        argv = by_save[run][1]
        assert ("--teacher-model-bf16" in argv) == (precision == "bf16"), run
        assert "--teacher-model-fp16" not in argv
    # SRD gets plain tfkl's optimizer steps (KD_EPOCHS=1: 32), split over its 3 stages.
    assert last(by_save["srd-tfkl"][1], "--stage-iters") == "11" and last(by_save["kd-tfkl"][1], "--epochs") == "1"
    # Every training run pads less: its batches run in 4 pieces of similar length.
    for run, (_, argv) in by_save.items():
        assert last(argv, "--length-pieces") == "4", run
    # The launchers evaluate and save once per epoch by default; the quick start's runs do both at their end only,
    # as when its table (docs/quickstart.md) was measured.
    for run in ("sft-teacher", "sft-student", "kd-fkl", "kd-fkl-selective", "kd-tfkl"):
        argv = by_save[run][1]
        assert (last(argv, "--eval-interval"), last(argv, "--save-interval")) == ("0", "0"), run
