"""Folds a LoRA adapter into its base model and writes a plain Hugging Face checkpoint (safetensors + tokenizer)
that loads with ``from_pretrained`` and needs no peft.

    python tools/merge_lora.py results/llama/train/sft/openllama2-7B/best checkpoints/openllama2-7B-sft-merged
    python tools/merge_lora.py ADAPTER_DIR OUT_DIR --base checkpoints/openllama2-7B   # base moved since training
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.config import InputError, exit_on_input_error  # noqa: E402
from distill.models import adapter_base, check_model_dir, is_adapter_dir, load_model, load_tokenizer  # noqa: E402
from distill.preflight import check_writable_dir  # noqa: E402


@exit_on_input_error
def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", help="LoRA adapter directory (a --peft lora checkpoint)")
    parser.add_argument("out", help="output model directory (must not exist)")
    parser.add_argument("--base", help="base model directory (default: the adapter's base_model_name_or_path)")
    args = parser.parse_args(argv)
    if not is_adapter_dir(args.adapter):
        raise InputError(f"{args.adapter} has no adapter_config.json: not a LoRA adapter directory")
    out = Path(args.out)
    if out.exists():
        raise InputError(f"{out} exists; choose a new output directory")
    try:
        base = args.base or adapter_base(args.adapter)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{Path(args.adapter) / 'adapter_config.json'}: no readable base_model_name_or_path ({e}); "
                         f"pass the base model with --base") from None
    check_model_dir(base, "--base" if args.base else f"the base of {args.adapter} (or pass --base)")
    # Before the models load: the output's parent must take the merged checkpoint (nothing is left behind here).
    check_writable_dir(str(out.parent), "OUT_DIR's parent", keep=False)
    model = load_model(base, peft_path=args.adapter, merge_adapter=True)
    tokenizer = load_tokenizer(args.adapter if (Path(args.adapter) / "tokenizer_config.json").exists() else base)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"merged {args.adapter} into {base} -> {out}")
    return out


if __name__ == "__main__":
    main()
