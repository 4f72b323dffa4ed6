"""Checks of model directories that need neither torch nor transformers, so an entry point can refuse a bad path in
a second, before the heavy imports and the model loads (distill/models.py re-exports them).

:func:`check_model_dir` is what every loader calls (training, the teacher, evaluation, SeqKD generation, SRD, the
tools through ``distill.models.load_model``): a directory is accepted only when it is complete —

* ``config.json`` (or, for a LoRA adapter, ``adapter_config.json`` and a complete base model);
* every weight file: ``model.safetensors`` (its header and length agree, so a truncated file is caught), or an index
  ``*.index.json`` whose every shard exists (and, for safetensors shards, is whole), or ``pytorch_model.bin`` (read
  with ``torch.load(weights_only=True)``, which cannot run code);
* tokenizer files (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``, or a sentencepiece model): without them
  transformers silently builds a one-token tokenizer, which trains and evaluates to Rouge-L 0 without an error;
* not an interrupted trainer checkpoint: a ``<save>/<step>/`` directory without ``trainer_state.json`` (the trainer
  writes it last, distill/trainer.py);
* no custom code in ``config.json`` (``auto_map`` for a model type transformers does not know) unless
  ``--trust-remote-code`` was given.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from distill.config import InputError

#: Written last into ``<save>/<step>/`` by distill/trainer.py (its ``STATE_FILE``): a step directory without it is an
#: interrupted save. Repeated here so the check needs no torch.
TRAINER_STATE = "trainer_state.json"
#: Files the trainer writes next to its step directories: a digit-named directory beside them is a trainer checkpoint.
RUN_FILES = ("args.json", "log.txt", "metrics.jsonl", "best.json", "best")
SENTENCEPIECE_FILES = ("tokenizer.model", "spiece.model", "sentencepiece.bpe.model")
TOKENIZER_FILES_HINT = "tokenizer.json, or vocab.json + merges.txt, or a sentencepiece tokenizer.model"
#: Weight files in the order transformers looks for them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def _fetch_hint(path: str) -> str:
    return (f"{path} is not a model directory: make the built-in tiny models with `python tools/make_tiny_models.py`, "
            f"or download a checkpoint there (see checkpoints/README.md)")


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base(path: str | Path) -> str:
    with open(Path(path) / "adapter_config.json", encoding="utf-8") as f:
        return json.load(f)["base_model_name_or_path"]


def tokenizer_source(path: str | Path) -> str:
    """Where a model directory's tokenizer is: the directory itself, or for a LoRA adapter directory without its own
    tokenizer (no ``tokenizer_config.json``) its base model."""
    if is_adapter_dir(path) and not (Path(path) / "tokenizer_config.json").exists():
        return adapter_base(path)
    return str(path)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         f"the checkpoint is damaged — copy or save it again") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a JSON object; the checkpoint is damaged — copy or save it again")
    return data


def tokenizer_files_problem(path: str | Path) -> Optional[str]:
    """Why ``path`` (a tokenizer directory, see :func:`tokenizer_source`) has no usable tokenizer files, or None."""
    p = Path(path)
    if not p.is_dir():
        return f"{p}: tokenizer directory not found"
    if (p / "tokenizer.json").is_file():
        return None
    if (p / "vocab.json").is_file() and (p / "merges.txt").is_file():
        return None
    if any((p / name).is_file() for name in SENTENCEPIECE_FILES):
        return None
    return (f"{p}: no tokenizer files ({TOKENIZER_FILES_HINT}); without them transformers builds a one-token "
            f"tokenizer — copy the tokenizer files of the model this one was made from into {p}")


def safetensors_problem(path: Path) -> Optional[str]:
    """Why a ``.safetensors`` file is not whole (missing, header unreadable, length not the one its header
    describes — a save or copy cut short), or None. Reads the header only."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 2 or 8 + n > size:
                return f"{path}: truncated (no complete safetensors header)"
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except FileNotFoundError:
        return f"{path}: missing"
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        return f"{path}: unreadable safetensors header ({type(e).__name__})"
    expected = 8 + n + max(ends, default=0)
    if size != expected:
        return f"{path}: {size} bytes but its header describes {expected} (truncated or damaged)"
    return None


def weights_problem(path: str | Path) -> Optional[str]:
    """Why a model directory's weights are incomplete, or None (see the module docstring for what is accepted)."""
    p = Path(path)
    names = ADAPTER_WEIGHT_FILES if is_adapter_dir(p) else WEIGHT_FILES
    for name in names:
        f = p / name
        if not f.is_file():
            continue
        if name.endswith(".index.json"):
            index = _read_json(f)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                return f"{f}: no weight_map"
            shards = sorted({str(s) for s in weight_map.values()})
            missing = [s for s in shards if not (p / s).is_file()]
            if missing:
                return (f"{p}: {len(missing)} of the {len(shards)} weight shards listed in {name} are missing "
                        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
            for s in shards:
                if s.endswith(".safetensors") and (why := safetensors_problem(p / s)):
                    return why
            return None
        if name.endswith(".safetensors"):
            return safetensors_problem(f)
        return None  # a .bin file: read with weights_only=True (distill/models.py), which cannot run code
    return f"{p}: no weight files ({' / '.join(names)})"


def complete_checkpoints(save: str | Path) -> list[int]:
    """The steps of ``save`` whose checkpoint is complete (``trainer_state.json``, written last, exists), ascending."""
    root = Path(save)
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / TRAINER_STATE).is_file())


def incomplete_checkpoint_problem(path: str | Path) -> Optional[str]:
    """Why ``path`` is an interrupted trainer checkpoint, or None: a digit-named directory whose parent holds other
    files of a run (``args.json``, ``log.txt``, ... or complete sibling checkpoints) and that lacks
    ``trainer_state.json``. A ``best`` link is followed to its step directory."""
    p = Path(path).resolve()
    if not p.name.isdigit() or (p / TRAINER_STATE).is_file():
        return None
    run = p.parent
    complete = complete_checkpoints(run)[::-1]
    if not complete and not any((run / f).exists() for f in RUN_FILES):
        return None  # a plain model directory that happens to have a number as its name
    if complete:
        best = run / "best"
        fix = (f"use {run / str(complete[0])} (the newest complete one)"
               + (f" or the run's best, {best}" if best.exists() and best.resolve() != p else ""))
    else:
        fix = f"no complete checkpoint in {run}; train again (--resume picks up the newest complete one)"
    return f"{path}: incomplete checkpoint (a save was interrupted: no {TRAINER_STATE}); {fix}"


def remote_code_problem(path: str | Path, flag: str = "--model-path") -> Optional[str]:
    """Why loading ``path`` would need ``--trust-remote-code`` (its ``config.json`` maps to custom code, ``auto_map``,
    for a model type transformers does not implement itself), or None."""
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = _read_json(cfg_path)
    if not cfg.get("auto_map"):
        return None
    # A checkpoint published before transformers implemented its model type keeps auto_map; transformers then uses
    # its own code without the flag. Only that rare case pays for importing the registry.
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if cfg.get("model_type") in CONFIG_MAPPING_NAMES:
        return None
    return (f"{flag} {path}: its config.json needs custom code from the checkpoint (auto_map "
            f"{sorted(cfg['auto_map'])}), which is not run by default; pass --trust-remote-code if you trust it")


def check_model_dir(path: Optional[str], flag: str = "--model-path", *, trust_remote_code: bool = False) -> str:
    """``path`` if it is a complete model (or LoRA adapter) directory; else InputError / FileNotFoundError naming
    ``flag``, the directory and the fix. Torch-free: runs before anything loads."""
    if path is None:
        raise InputError(f"{flag} is required (a model directory)")
    p = Path(path)
    adapter = is_adapter_dir(p)
    if not ((p / "config.json").is_file() or adapter):
        raise FileNotFoundError(f"{flag}: " + _fetch_hint(str(path)))
    if why := incomplete_checkpoint_problem(p):
        raise InputError(f"{flag} {why}")
    if not adapter and not trust_remote_code and (why := remote_code_problem(p, flag)):
        raise InputError(why)
    if why := weights_problem(p):
        raise InputError(f"{flag} {why}; the checkpoint is incomplete — save or download it again")
    if adapter:
        try:
            base = adapter_base(p)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{flag} {p / 'adapter_config.json'}: no readable base_model_name_or_path "
                             f"({type(e).__name__}); save the adapter again") from None
        if not Path(base).is_dir():
            raise InputError(f"{flag} {path}: the LoRA adapter's base model {base} (adapter_config.json "
                             f"base_model_name_or_path) is not a directory; fetch it there, or merge the adapter "
                             f"with python tools/merge_lora.py --base <its new place>")
        check_model_dir(base, f"{flag} (base of the adapter {path})", trust_remote_code=trust_remote_code)
    if why := tokenizer_files_problem(tokenizer_source(p)):
        raise InputError(f"{flag} {why}")
    return str(p)


def check_adapter_dir(path: Optional[str], flag: str = "--peft-path") -> str:
    """``path`` if it is a complete LoRA adapter directory (applied on a base given separately, so its own recorded
    base is not checked); else InputError naming ``flag``."""
    if path is None or not is_adapter_dir(path):
        raise InputError(f"{flag} {path}: no adapter_config.json there; pass a LoRA adapter directory (e.g. "
                         f"results/<family>/train/sft/<model>/best of a --peft lora run)")
    if why := incomplete_checkpoint_problem(path):
        raise InputError(f"{flag} {why}")
    if why := weights_problem(path):
        raise InputError(f"{flag} {why}; the adapter is incomplete — save it again")
    return str(path)


def model_type(path: str) -> str:
    """The ``model_type`` of a model directory's config.json (of the base model, for a LoRA adapter directory)."""
    src = Path(adapter_base(path) if is_adapter_dir(path) else path)
    try:
        return str(json.loads((src / "config.json").read_text(encoding="utf-8"))["model_type"])
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{src / 'config.json'}: no readable model_type ({e}); pass --model-type") from None


#: Families whose position table is learned: a row past its end does not exist (rotary families extrapolate).
LEARNED_POSITIONS = {"gpt2": "n_positions", "opt": "max_position_embeddings"}


def check_max_length(path: Optional[str], max_length: int, flag: str = "--model-path") -> None:
    """A training row of ``max_length`` tokens must fit the model's learned position table (GPT-2, OPT), or the first
    long batch would fail deep inside the model; one line naming both values instead, before anything loads."""
    if path is None:
        return
    src = Path(adapter_base(path) if is_adapter_dir(path) else path)
    try:
        cfg = json.loads((src / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # check_model_dir reports an unreadable config
    key = LEARNED_POSITIONS.get(str(cfg.get("model_type")))
    limit = cfg.get(key) if key else None
    if isinstance(limit, int) and max_length > limit:
        raise InputError(f"--max-length {max_length} is more than {flag} {path} has positions ({key} {limit}); "
                         f"use --max-length {limit} or less")


def main(argv: Optional[list[str]] = None) -> int:
    """``python -m distill.inputs DIR [--flag NAME] [--trust-remote-code]``: :func:`check_model_dir` for launch
    scripts, so a bad checkpoint is one line and exit code 2 before torchrun starts any process."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="Check that a model directory is complete (torch-free).")
    parser.add_argument("path")
    parser.add_argument("--flag", default="--model-path", help="how the directory was given, for the message")
    parser.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    try:
        check_model_dir(args.path, args.flag, trust_remote_code=args.trust_remote_code)
    except (InputError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def check_generation_room(data: "object", what: str = "to generate") -> None:
    """A --max-length that leaves no room for one generated token after the data's longest prompt (its processing's
    --max-prompt-length, in meta.json) is refused in one line: for methods that generate inside training steps."""
    from data_utils.processing import read_meta

    data_dir, max_length = getattr(data, "data_dir"), getattr(data, "max_length")
    longest = (read_meta(data_dir) or {}).get("max_prompt_length", getattr(data, "max_prompt_length"))
    if max_length <= longest:
        from distill.config import ConfigError

        raise ConfigError(f"--max-length {max_length}: leaves no room {what} after the data's prompts of up to "
                          f"{longest} tokens ({data_dir}/meta.json); raise --max-length above {longest}")


def check_teacher_dir(cfg: "object", data: "object" = None) -> None:
    """A distillation entry point's teacher (a TeacherConfig): a complete model directory, and rows of the data's
    --max-length fit its positions (the teacher reads the same rows)."""
    path = getattr(cfg, "teacher_model_path")
    check_model_dir(path, "--teacher-model-path")
    if data is not None:
        check_max_length(path, getattr(data, "max_length"), "--teacher-model-path")
