"""Checks of model directories that need neither torch nor transformers, so an entry point can refuse a bad path in
a second, before the heavy imports and the model loads (distill/models.py re-exports them)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from distill.config import InputError


def _fetch_hint(path: str) -> str:
    return (f"{path} is not a model directory: make the built-in tiny models with `python tools/make_tiny_models.py`, "
            f"or download a checkpoint there (see checkpoints/README.md)")


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def check_model_dir(path: Optional[str], flag: str = "--model-path") -> str:
    if path is None:
        raise InputError(f"{flag} is required (a model directory)")
    p = Path(path)
    if not ((p / "config.json").is_file() or is_adapter_dir(p)):
        raise FileNotFoundError(f"{flag}: " + _fetch_hint(str(path)))
    return str(p)


def adapter_base(path: str | Path) -> str:
    with open(Path(path) / "adapter_config.json", encoding="utf-8") as f:
        return json.load(f)["base_model_name_or_path"]


def model_type(path: str) -> str:
    """The ``model_type`` of a model directory's config.json (of the base model, for a LoRA adapter directory)."""
    src = Path(adapter_base(path) if is_adapter_dir(path) else path)
    try:
        return str(json.loads((src / "config.json").read_text(encoding="utf-8"))["model_type"])
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{src / 'config.json'}: no readable model_type ({e}); pass --model-type") from None
