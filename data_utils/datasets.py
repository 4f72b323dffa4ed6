"""Torch datasets and collators over the processed binaries.

Training batches are pre-shifted: ``input_ids[t]`` is read and ``labels[t]`` is the token that follows it, with -100
where no loss is taken (prompt tokens and padding). So ``logits[b, t]`` is scored against ``labels[b, t]`` directly,
and ``labels != -100`` is the response mask every loss (CE, KD, token selection) shares.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data_utils.indexed_dataset import IndexedDataset
from data_utils.processing import DataError
from data_utils.splits import require_split, split_prefix  # noqa: F401  (re-exported)

IGNORE_INDEX = -100


class InstructionDataset(Dataset):
    """One processed split: each item is the prompt and response token ids of an example.

    ``num`` keeps only the first ``num`` examples (-1: all); ``raw`` holds the matching ``{split}.jsonl`` records when
    present (text, references), so generation and metrics can use them. ``vocab_size`` (the tokenizer's length)
    bounds the stored token ids, besides the directory's ``meta.json`` (:class:`IndexedDataset`).
    """

    def __init__(self, data_dir: str | Path, split: str, num: int = -1, vocab_size: Optional[int] = None):
        self.data_dir = Path(data_dir)
        self.split = split
        self.data = IndexedDataset(require_split(data_dir, split), vocab_size)
        n = len(self.data)
        self.num = n if num is None or num < 0 else min(num, n)
        jsonl = self.data_dir / f"{split}.jsonl"
        self.raw: Optional[list[dict[str, Any]]] = None
        if jsonl.exists():
            with open(jsonl, encoding="utf-8") as f:
                self.raw = [json.loads(line) for line in f if line.strip()][: self.num]
            if len(self.raw) != self.num:
                raise DataError(f"{jsonl} has {len(self.raw)} records but {split}_0.bin has {self.num}: "
                                f"re-run the processing tool")

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "prompt": self.data.prompt(i), "response": self.data.response(i)}

    def references(self, i: int) -> list[str]:
        if self.raw is None:
            raise FileNotFoundError(f"{self.data_dir / (self.split + '.jsonl')} is missing: references for Rouge-L "
                                    f"come from it (re-run the processing tool)")
        rec = self.raw[i]
        refs = rec.get("references") or [rec["output"]]
        return [str(r) for r in refs]


class LMDataset(Dataset):
    """Packed pretraining chunks (prompt length 0): every token is a target."""

    def __init__(self, data_dir: str | Path, split: str = "train", vocab_size: Optional[int] = None):
        self.data = IndexedDataset(require_split(data_dir, split), vocab_size)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "prompt": np.zeros(0, dtype=np.int64), "response": self.data[i]}


class LMCollator:
    """Builds pre-shifted, right-padded training batches: sequence = prompt + response + EOS, cut to ``max_length``.

    Returns ``input_ids``/``attention_mask``/``labels`` of shape [B, L-1] where L is the longest sequence.
    """

    def __init__(self, pad_token_id: int, eos_token_id: Optional[int], max_length: int, append_eos: bool = True):
        self.pad = pad_token_id
        self.eos = eos_token_id
        self.max_length = max_length
        self.append_eos = append_eos and eos_token_id is not None

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs, starts = [], []
        for it in items:
            prompt, response = np.asarray(it["prompt"]), np.asarray(it["response"])
            parts = [prompt, response] + ([np.array([self.eos])] if self.append_eos else [])
            seq = np.concatenate(parts).astype(np.int64)[: self.max_length]
            seqs.append(seq)
            # The first target is the first response token, predicted from the last prompt token.
            starts.append(max(len(prompt) - 1, 0))
        width = max(max(len(s) for s in seqs) - 1, 1)
        input_ids = torch.full((len(seqs), width), self.pad, dtype=torch.long)
        labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for b, (seq, start) in enumerate(zip(seqs, starts)):
            n = len(seq) - 1
            if n <= 0:
                continue
            t = torch.from_numpy(seq)
            input_ids[b, :n] = t[:-1]
            attention_mask[b, :n] = 1
            labels[b, start:n] = t[start + 1 :]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels,
                "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long)}


def split_by_length(batch: dict[str, torch.Tensor], pieces: int) -> list[dict[str, torch.Tensor]]:
    """Splits a right-padded training batch into up to ``pieces`` batches of rows of similar length, each cut to its
    own longest row.

    The rows and their tokens are the same, so losses summed over the pieces and normalised by the whole batch's
    counts equal the whole batch's (up to float summation order); only the compute spent on padding shrinks — with
    random batches of the built-in data, 4 pieces pad 14% of the positions instead of 45%. Per-row tensors ([B] or
    [B, T]) are split alike; [B, T] ones are cut to the piece's length.
    """
    rows = batch["attention_mask"].shape[0]
    if pieces <= 1 or rows <= 1:
        return [batch]
    lengths = batch["attention_mask"].sum(dim=1)
    order = torch.sort(lengths, stable=True).indices
    out = []
    for idx in torch.tensor_split(order, min(pieces, rows)):
        width = int(lengths[idx].max())
        out.append({k: (v[idx, :width] if v.dim() == 2 else v[idx]) for k, v in batch.items()})
    return out


class PromptCollator:
    """Left-padded prompt batches for generation (so every row's next token is at the right edge)."""

    def __init__(self, pad_token_id: int, max_prompt_length: int):
        self.pad = pad_token_id
        self.max_prompt_length = max_prompt_length

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        prompts = [np.asarray(it["prompt"], dtype=np.int64)[-self.max_prompt_length :] for it in items]
        width = max(max(len(p) for p in prompts), 1)
        input_ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for b, p in enumerate(prompts):
            if len(p):
                input_ids[b, width - len(p) :] = torch.from_numpy(p)
                attention_mask[b, width - len(p) :] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "index": torch.tensor([int(it["index"]) for it in items], dtype=torch.long)}


# ----------------------------------------------------------------------------------------------------------------
# Batches made inside a training step (objectives that generate: SeqKD in the step, later on-policy methods).
# ----------------------------------------------------------------------------------------------------------------
def prompts_of(batch: dict[str, torch.Tensor]) -> list[list[int]]:
    """Each row's prompt tokens in a pre-shifted training batch (LMCollator): up to and including the position that
    predicts the first response token; the whole row where no response token is left."""
    out = []
    for ids, labels, attn in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        loss_at = (labels != IGNORE_INDEX).nonzero()
        end = int(loss_at[0]) + 1 if len(loss_at) else int(attn.sum())
        out.append(ids[:end].tolist())
    return out


def left_padded(prompts: Sequence[Sequence[int]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """A left-padded prompt batch for generation (as PromptCollator makes from dataset items)."""
    width = max(max((len(p) for p in prompts), default=1), 1)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        if len(p):
            input_ids[b, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
            attention_mask[b, width - len(p):] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def response_batch(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int,
                   max_length: Optional[int] = None) -> dict[str, torch.Tensor]:
    """A right-padded, pre-shifted training batch (as LMCollator makes) from (prompt, response) token lists: the
    loss falls on the response tokens only (an EOS the caller appended included). Rows are cut to ``max_length``
    tokens in all."""
    rows = [list(p) + list(r) for p, r in pairs]
    if max_length is not None:
        rows = [r[:max_length] for r in rows]
    width = max(max(len(r) for r in rows) - 1, 1)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, ((prompt, _), row) in enumerate(zip(pairs, rows)):
        n = len(row) - 1
        if n <= 0:
            continue
        input_ids[b, :n] = torch.tensor(row[:-1], dtype=torch.long)
        attention_mask[b, :n] = 1
        start = max(len(prompt) - 1, 0)
        if start < n:
            labels[b, start:n] = torch.tensor(row[start + 1:], dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
