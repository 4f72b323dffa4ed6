#!/usr/bin/env python
"""Train one small byte-level BPE tokenizer and write randomly initialised tiny teacher/student checkpoints.

    python tools/make_tiny_models.py [--corpus data/synth/train.jsonl ...] [--families gpt2 opt llama qwen2]
        [--vocab-size 2048] [--out-dir checkpoints] [--seed 1] [--overwrite]

For every family F this writes ``<out-dir>/tiny-F-teacher`` and ``<out-dir>/tiny-F-student``, each a normal
Hugging Face checkpoint (config.json, model.safetensors, tokenizer files) loadable with ``from_pretrained(path)``.
Sizes come from ``configs/models/tiny-F-{teacher,student}.json`` (config kwargs plus ``model_type``); the
vocabulary size and the bos/eos/pad ids come from the tokenizer.

All checkpoints share ONE tokenizer, so teacher and student (of any family) agree on token ids. Its only special
tokens are ``<|endoftext|>`` (bos = eos = unk = pad) and the chat markers ``<|im_start|>`` / ``<|im_end|>``; the
qwen2 checkpoints additionally carry a chat template using those markers.

Each checkpoint is built in a temporary directory and renamed into place; an existing checkpoint is kept (and
reported as skipped) unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as `python tools/make_tiny_models.py`: make the repo's packages importable
    sys.path.insert(0, str(REPO_ROOT))

from data_utils.atomic import build_dir  # noqa: E402
from data_utils.prompts import TEMPLATE_NO_INPUT, TEMPLATE_WITH_INPUT, build_prompt, normalize_record  # noqa: E402

FAMILIES = ("gpt2", "opt", "llama", "qwen2")
ROLES = ("teacher", "student")
EOS_TOKEN = "<|endoftext|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
# Qwen2-style chat layout: one "<|im_start|>role\ncontent<|im_end|>\n" block per message, then the assistant header.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHAT_TEMPLATE_FAMILIES = ("qwen2",)
DEFAULT_CORPUS = "data/synth/train.jsonl"
CORPUS_HINT = "python tools/make_synthetic_data.py"
DOC_NEWLINE = "<@x(x!>"  # newline marker of one-document-per-line text corpora (see tools/process_data_pretrain.py)


@dataclass
class Row:
    family: str
    role: str
    params: int
    path: Path
    status: str  # "built" | "replaced" | "skipped (exists)"


def checkpoint_dir(out_dir: Path, family: str, role: str) -> Path:
    return Path(out_dir) / f"tiny-{family}-{role}"


def _jsonl_texts(path: Path) -> Iterator[str]:
    """Per record: the rendered instruction prompt followed by the output (covers instruction, input, output and
    the template text, so the template's words become single tokens)."""
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = normalize_record(json.loads(line))
            except (json.JSONDecodeError, ValueError) as e:
                raise ValueError(f"{path}:{lineno}: {e}") from None
            yield build_prompt(rec) + rec["output"]


def corpus_texts(paths: Iterable[Path]) -> Iterator[str]:
    """Training texts for the tokenizer: JSONL instruction records (``.jsonl``) or plain text (one line each)."""
    for path in paths:
        if path.suffix == ".jsonl":
            yield from _jsonl_texts(path)
        else:
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield line.rstrip("\n").replace(DOC_NEWLINE, "\n")
    # The bare template skeletons, so they compress well even for a plain-text corpus.
    for _ in range(8):
        yield TEMPLATE_WITH_INPUT.format(instruction="", input="")
        yield TEMPLATE_NO_INPUT.format(instruction="")


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE (no prefix space) wrapped as a transformers fast tokenizer.

    Text is NFC-normalised before encoding, so ``decode(encode(s)) == s`` holds exactly for NFC text (which
    :func:`data_utils.prompts.normalize_record` produces); byte-level BPE itself loses nothing.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    specials = [EOS_TOKEN, *CHAT_TOKENS]
    if vocab_size < 256 + len(specials):
        raise ValueError(f"--vocab-size {vocab_size} is too small: byte-level BPE needs at least {256 + len(specials)}")
    tok = Tokenizer(models.BPE())
    # AutoTokenizer loads model_type "qwen2" checkpoints with Qwen2Tokenizer, which ignores the pipeline stored in
    # tokenizer.json and rebuilds NFC + a regex split + regex-free ByteLevel around the saved vocab and merges.
    # Using exactly that pipeline for the one shared tokenizer keeps ids identical across all families.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        additional_special_tokens=list(CHAT_TOKENS),
        # Cleaning up "spaces before punctuation" would break the exact text round trip.
        clean_up_tokenization_spaces=False,
    )


def load_config_kwargs(configs_dir: Path, family: str, role: str) -> dict:
    path = Path(configs_dir) / f"tiny-{family}-{role}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model config missing; add a JSON of config kwargs with a 'model_type' key")
    kwargs = json.loads(path.read_text(encoding="utf-8"))
    if kwargs.get("model_type") != family:
        raise ValueError(f"{path}: 'model_type' must be {family!r}, got {kwargs.get('model_type')!r}")
    return kwargs


def build_config(kwargs: dict, tokenizer):
    """Model config from the JSON kwargs, with the vocabulary and special ids taken from the tokenizer."""
    from transformers import AutoConfig

    kwargs = dict(kwargs)
    model_type = kwargs.pop("model_type")
    eos = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    return AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, pad_token_id=eos, **kwargs
    )


def _write_checkpoint(config, tokenizer, seed: int, dest: Path) -> int:
    """Build model + tokenizer in a temp dir next to ``dest`` and rename it into place (replacing an earlier one);
    returns #parameters."""
    import torch
    from transformers import AutoModelForCausalLM

    def fill(tmp: Path) -> int:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        model.save_pretrained(tmp)  # safetensors: the only format transformers 5 writes
        tokenizer.save_pretrained(tmp)
        return model.num_parameters()

    return build_dir(dest, fill)[0]


def _count_params(path: Path) -> int:
    from transformers import AutoModelForCausalLM

    # Safe loading (distill/models.py): no checkpoint code, weights from safetensors / weights_only.
    return AutoModelForCausalLM.from_pretrained(path, trust_remote_code=False, weights_only=True).num_parameters()


def make_tiny_models(
    corpus: list[Path],
    families: Iterable[str] = FAMILIES,
    vocab_size: int = 2048,
    out_dir: Path = Path("checkpoints"),
    seed: int = 1,
    overwrite: bool = False,
    configs_dir: Path = REPO_ROOT / "configs" / "models",
) -> list[Row]:
    """Build the requested tiny checkpoints; returns one row per (family, role)."""
    families = list(dict.fromkeys(families))
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown families {unknown}: choose from {list(FAMILIES)}")
    out_dir = Path(out_dir)
    all_kwargs = {(f, r): load_config_kwargs(configs_dir, f, r) for f in families for r in ROLES}
    todo = [(f, r) for f in families for r in ROLES if overwrite or not checkpoint_dir(out_dir, f, r).exists()]

    tokenizer = None
    if todo:
        corpus = [Path(p) for p in corpus]
        for p in corpus:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: tokenizer corpus missing; make it with: {CORPUS_HINT}")
        tokenizer = train_tokenizer(corpus_texts(corpus), vocab_size)

    rows: list[Row] = []
    for family in families:
        for role in ROLES:
            dest = checkpoint_dir(out_dir, family, role)
            if (family, role) not in todo:
                rows.append(Row(family, role, _count_params(dest), dest, "skipped (exists)"))
                continue
            existed = dest.exists()
            tok = tokenizer
            if family in CHAT_TEMPLATE_FAMILIES:
                tok = _with_chat_template(tokenizer)
            n = _write_checkpoint(build_config(all_kwargs[family, role], tok), tok, seed, dest)
            rows.append(Row(family, role, n, dest, "replaced" if existed else "built"))
    if tokenizer is not None:
        _warn_on_tokenizer_mismatch(tokenizer, [r.path for r in rows if r.status.startswith("skipped")])
    return rows


def _with_chat_template(tokenizer):
    """A copy of the shared tokenizer that also carries the Qwen2-style chat template (ids unchanged)."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = QWEN2_CHAT_TEMPLATE
    return tok


def _warn_on_tokenizer_mismatch(tokenizer, kept: list[Path]) -> None:
    """Kept checkpoints must tokenize like the new ones, or teacher/student ids would silently disagree."""
    from transformers import AutoTokenizer

    vocab = tokenizer.get_vocab()
    for path in kept:
        if AutoTokenizer.from_pretrained(path, trust_remote_code=False).get_vocab() != vocab:
            print(
                f"warning: {path} keeps an older tokenizer that differs from the new one; "
                f"rerun with --overwrite so all tiny checkpoints share token ids",
                file=sys.stderr,
            )


def format_table(rows: list[Row]) -> str:
    header = ("family", "role", "params", "status", "path")
    body = [(r.family, r.role, f"{r.params:,}", r.status, str(r.path)) for r in rows]
    widths = [max(len(x[i]) for x in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *body]]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", nargs="+", type=Path, default=[Path(DEFAULT_CORPUS)],
                   help="JSONL instruction records and/or plain text files for the tokenizer")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--out-dir", type=Path, default=Path("checkpoints"))
    p.add_argument("--configs-dir", type=Path, default=REPO_ROOT / "configs" / "models")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--overwrite", action="store_true", help="replace existing checkpoints instead of skipping them")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per saved checkpoint would bury the table
    try:
        rows = make_tiny_models(
            args.corpus, args.families, args.vocab_size, args.out_dir, args.seed, args.overwrite, args.configs_dir
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
