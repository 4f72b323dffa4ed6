"""Checks of a run's inputs that need no model, made before any model loads — seconds, where a model load with real
checkpoints takes minutes — and without torch, so a bad input answers before torch and DeepSpeed import.

* The DeepSpeed JSON (:func:`read_ds_config`): valid JSON (else one line naming the file, line and column), an
  object, a ZeRO stage DeepSpeed has, not both fp16 and bf16, and no ``optimizer`` or ``scheduler`` section — the
  toolkit always builds AdamW and its learning-rate schedule from flags, so such a section would be dropped without
  a word. The settings the flags own are checked against them (:func:`ds_config_warnings`): a value that disagrees
  is overridden with a one-line warning naming both; one that agrees, ``"auto"`` or an absent one says nothing.
  :func:`apply_flags` writes the flags' values in (distill/trainer.py's ``load_ds_config``).
* The output directory (:func:`check_writable_dir`): made, and a probe file written and removed in it.
* The processed data (:func:`check_split`): each split's ``IndexedDataset`` opened, which validates the index, the
  pointers, the byte length of ``.bin`` and the token ids (data_utils/indexed_dataset.py), and its ``.jsonl``
  records parsed and counted — what the trainer would otherwise find only after the models loaded.

Every refusal is an :class:`~distill.config.InputError` (or ConfigError): ``error: ...`` and exit status 2 from the
entry points, no traceback.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any, Optional

from distill.config import ConfigError, InputError, TrainConfig

DS_FLAG = "--deepspeed-config"
OPTIMIZER_FLAGS = "--lr, --weight-decay, --adam-beta1, --adam-beta2"
SCHEDULE_FLAGS = "--lr-schedule, --warmup-iters, --lr-min"
DEFAULT_DS_CONFIG: dict[str, Any] = {"zero_optimization": {"stage": 0}}


def read_ds_config(path: Optional[str]) -> dict[str, Any]:
    """The DeepSpeed config at ``path`` (ZeRO-0 without one), checked; ConfigError naming the file otherwise."""
    if path is None:
        return json.loads(json.dumps(DEFAULT_DS_CONFIG))
    where = f"{DS_FLAG} {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text; pass a JSON file (see configs/deepspeed/)") from None
    except OSError as e:
        raise ConfigError(f"{where}: cannot be read ({e.strerror or e}); see configs/deepspeed/") from None
    try:
        cfg = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON at line {e.lineno}, column {e.colno} ({e.msg}); fix it, or start "
                          f"from a file of configs/deepspeed/") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: holds a JSON {type(cfg).__name__}, not an object of DeepSpeed settings "
                          f"(see configs/deepspeed/)")
    # The optimizer and the schedule are always the toolkit's own (distill/trainer.py: AdamW, or DeepSpeed's CPU Adam
    # with offload_optimizer, and lr_lambda): DeepSpeed would take the client's and drop these without a word.
    sections = [s for s in ("optimizer", "scheduler") if cfg.get(s) is not None]
    if sections:
        owners = {"optimizer": f"AdamW is built from {OPTIMIZER_FLAGS}",
                  "scheduler": f"the learning-rate schedule from {SCHEDULE_FLAGS}"}
        names = " and ".join(f'"{s}"' for s in sections)
        raise ConfigError(f"{where}: its {names} section{'s' if len(sections) > 1 else ''} would be ignored — "
                          f"{'; '.join(owners[s] for s in sections)}; delete "
                          f"{'them' if len(sections) > 1 else 'it'} and set those flags")
    zero = cfg.get("zero_optimization", {})
    if not isinstance(zero, dict):
        raise ConfigError(f'{where}: "zero_optimization" must be an object, e.g. {{"stage": 1}}')
    stage = zero.get("stage", 0)
    if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
        raise ConfigError(f'{where}: "zero_optimization.stage" is {json.dumps(stage)}; use 0, 1, 2 or 3')
    enabled = [k for k in ("fp16", "bf16") if isinstance(cfg.get(k), dict) and cfg[k].get("enabled")]
    if len(enabled) > 1:
        raise ConfigError(f"{where}: enables both fp16 and bf16; keep one (configs/deepspeed/ has a file of each)")
    return cfg


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _disagrees(value: Any, want: float) -> bool:
    """True when the JSON gives a value other than the flags' (absent, null and "auto" leave it to the flags)."""
    if value is None or value == "auto":
        return False
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return float(value) != float(want)


def ds_config_warnings(cfg: dict[str, Any], path: Optional[str], train: TrainConfig, world_size: int) -> list[str]:
    """One ``warning: ...`` line per setting of the DeepSpeed config that the flags override with another value."""
    if path is None:
        return []
    gas, batch = train.gradient_accumulation_steps, train.batch_size
    owned = [
        ("train_micro_batch_size_per_gpu", batch, f"--batch-size {batch}"),
        ("gradient_accumulation_steps", gas, f"--gradient-accumulation-steps {gas}"),
        ("train_batch_size", batch * gas * world_size,
         f"--batch-size {batch} x --gradient-accumulation-steps {gas} x {world_size} "
         f"process{'es' if world_size != 1 else ''} = {batch * gas * world_size}"),
        ("gradient_clipping", train.clip_grad, f"--clip-grad {_num(train.clip_grad)}"),
    ]
    return [f"warning: {path} sets {key} {json.dumps(cfg[key])}; {flags} wins"
            for key, want, flags in owned if key in cfg and _disagrees(cfg[key], want)]


def apply_flags(cfg: dict[str, Any], train: TrainConfig) -> dict[str, Any]:
    """``cfg`` with the flags' batch size, accumulation and clipping written in (DeepSpeed derives the global batch
    size from them and the world size)."""
    cfg.pop("train_batch_size", None)
    cfg["train_micro_batch_size_per_gpu"] = train.batch_size
    # Each micro-batch goes through backward as `length_pieces` pieces (split_by_length), so DeepSpeed's gradient
    # accumulation boundary counts pieces.
    cfg["gradient_accumulation_steps"] = train.gradient_accumulation_steps * train.length_pieces
    cfg["gradient_clipping"] = train.clip_grad
    cfg.setdefault("steps_per_print", 10**9)
    return cfg


def launch_world_size() -> int:
    """The number of processes of this run as the launcher set it (torchrun, DeepSpeed's launcher), before joining."""
    try:
        return max(int(os.environ.get("WORLD_SIZE", "1")), 1)
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Global rank 0, read before the process group exists (torchrun and DeepSpeed's launcher set RANK): the one
    that prints the checks' warnings."""
    return os.environ.get("RANK", "0") == "0"


def check_writable_dir(path: Optional[str], flag: str = "--save", keep: bool = True) -> Path:
    """Makes ``path`` (and its parents) and writes and removes a probe file there; InputError naming ``flag``.
    ``keep=False`` removes again the directories it made (a tool that writes its outputs only at the end leaves
    nothing behind when a later check stops it). The probe's name is this process's own, so ranks may probe alike."""
    if path is None:
        raise InputError(f"{flag} is required (the output directory)")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{flag} {path}: is a file, not a directory; pass a directory to write into")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {path}: {parent} is a file, so no directory can be made under it; pass "
                                 f"another directory")
            break
    probe = p / f".write-probe-{socket.gethostname()}-{os.getpid()}"
    made = [d for d in (p, *p.parents) if not d.exists()]
    try:
        p.mkdir(parents=True, exist_ok=True)
        with open(probe, "w", encoding="utf-8") as f:
            f.write("probe\n")
        probe.unlink()
    except OSError as e:
        raise InputError(f"{flag} {path}: cannot write there ({e.strerror or e}); pass a directory you can write "
                         f"to") from None
    finally:
        if not keep:
            for d in made:  # innermost first
                try:
                    d.rmdir()
                except OSError:
                    break  # not empty (something else wrote there meanwhile), or already gone
    return p


def check_split(data_dir: str | Path, split: str, flag: str = "--data-dir", num: int = -1,
                records: bool = True) -> int:
    """Opens ``<data_dir>/<split>_0.{bin,idx}`` (which validates them) and, with ``records``, parses the split's
    ``.jsonl`` (the references) and checks it holds the first ``num`` (-1: all) examples; returns the example
    count. InputError naming the file and the fix."""
    from data_utils.indexed_dataset import IndexedDataset
    from data_utils.splits import require_split

    prefix = require_split(data_dir, split)
    try:
        n = len(IndexedDataset(prefix))
    except InputError:
        raise
    except ValueError as e:  # the reader's messages name the file and the tool that remakes it
        raise InputError(f"{flag} {data_dir}: {e}") from None
    jsonl = Path(data_dir) / f"{split}.jsonl"
    if records and jsonl.exists():
        want = n if num is None or num < 0 else min(num, n)
        count = 0
        with open(jsonl, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:  # the dataset reader parses every record
                    json.loads(line)
                except ValueError as e:
                    raise InputError(f"{flag} {data_dir}: {jsonl} line {lineno} is not JSON ({e}); re-run the "
                                     f"processing tool (tools/process_data_dolly.py)") from None
                count += 1
        if count < want:
            raise InputError(f"{flag} {data_dir}: {jsonl} has {count} records but {prefix}.bin has {want}; re-run "
                             f"the processing tool (tools/process_data_dolly.py)")
    return n


def check_training_splits(data_dir: str, dev_num: int = -1, lm_data_dir: Optional[str] = None) -> None:
    """The training run's data: train (not empty) and valid under ``--data-dir``, and the pretraining corpus of
    ``--lm-data-dir`` when its loss is on."""
    if check_split(data_dir, "train") == 0:
        raise InputError(f"--data-dir {data_dir}: the train split has no examples; process more data "
                         f"(tools/process_data_dolly.py)")
    check_split(data_dir, "valid", num=dev_num)
    if lm_data_dir is not None:
        if check_split(lm_data_dir, "train", "--lm-data-dir", records=False) == 0:
            raise InputError(f"--lm-data-dir {lm_data_dir}: the corpus has no chunks; process a larger one "
                             f"(tools/process_data_pretrain.py)")
