"""Batched generation over a processed split, sharded across ranks.

Used by evaluation (during training and in evaluate.py); later by SeqKD data generation, SRD reflection and
on-policy methods. Prompts are left-padded so every row continues at the same position.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from data_utils.datasets import InstructionDataset, PromptCollator
from distill.config import GenerationConfig, InputError
from distill.dist import all_gather_objects, shard_indices


def max_positions(model: nn.Module) -> Optional[int]:
    cfg = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


#: GenerationConfig fields that only split or report the work; every other field decides what is generated.
NOT_DECODING = frozenset({"eval_batch_size", "progress_interval"})


def decoding_settings(gen: GenerationConfig) -> dict[str, Any]:
    """The settings that decide the answers (all but :data:`NOT_DECODING`): recorded with evaluation results, and
    part of SeqKD's resumable-parts settings, so that a change of any of them counts as a change."""
    return {k: v for k, v in asdict(gen).items() if k not in NOT_DECODING}


def generation_kwargs(gen: GenerationConfig, tokenizer: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"max_new_tokens": gen.max_new_tokens, "do_sample": gen.do_sample,
                          "pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    # Both apply to greedy and sampled decoding alike; off (0, 1.0) they are left out, so a checkpoint's own
    # generation_config cannot switch them on either.
    kw["num_beams"] = gen.num_beams
    kw["no_repeat_ngram_size"] = gen.no_repeat_ngram_size or None
    kw["repetition_penalty"] = gen.repetition_penalty if gen.repetition_penalty != 1.0 else None
    if gen.do_sample:
        kw.update(top_k=gen.top_k, top_p=gen.top_p, temperature=gen.temperature)
    else:
        # Greedy: neutralise sampling knobs a checkpoint's generation_config may carry.
        kw.update(top_k=None, top_p=None, temperature=None)
    return kw


@torch.no_grad()
def generate_batch(model: nn.Module, tokenizer: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   gen: GenerationConfig, synced_gpus: bool = False, keep_eos: bool = False) -> list[list[int]]:
    """Generates for one left-padded batch [B, P]; returns each row's new token ids, cut at the first EOS (which
    ``keep_eos`` keeps: the caller then knows which answers ended and which ran into the length limit)."""
    kw = generation_kwargs(gen, tokenizer)
    limit = max_positions(model)
    if limit is not None:
        if input_ids.shape[1] > limit:  # the prompt alone runs past the position table (an IndexError in the model)
            raise InputError(f"--max-prompt-length: prompts of {input_ids.shape[1]} tokens do not fit the model's "
                             f"{limit} positions; pass --max-prompt-length {limit - 1} or less")
        # Never run past the position table: a prompt near the limit gets a shorter continuation.
        kw["max_new_tokens"] = max(1, min(kw["max_new_tokens"], limit - input_ids.shape[1]))
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, synced_gpus=synced_gpus, **kw)
    new = out[:, input_ids.shape[1]:].tolist()
    eos = tokenizer.eos_token_id
    result = []
    for row in new:
        if eos is not None and eos in row:
            row = row[: row.index(eos) + int(keep_eos)]
        result.append(row)
    return result


def generate_split(model: nn.Module, tokenizer: Any, dataset: InstructionDataset, gen: GenerationConfig, *,
                   rank: int, world_size: int, device: torch.device, max_prompt_length: int,
                   synced_gpus: bool = False, indices: Optional[Sequence[int]] = None,
                   seed: Optional[int] = None,
                   progress: Optional[Callable[[int, int], None]] = None) -> list[dict[str, Any]]:
    """Generates a response for every example of ``dataset`` (or ``indices``), each rank taking a strided shard.

    Returns, on every rank, the records ``{"index", "response", "num_tokens"}`` of all examples in index order.
    ``progress(done, total)`` is called after each batch with this rank's prompts done and its share.
    """
    order = list(range(len(dataset))) if indices is None else list(indices)
    mine = [order[i] for i in shard_indices(len(order), rank, world_size, pad=True)]
    collate = PromptCollator(tokenizer.pad_token_id, max_prompt_length)
    was_training = model.training
    model.eval()
    if seed is not None:
        torch.manual_seed(seed + rank)
    records: list[dict[str, Any]] = []
    for start in range(0, len(mine), gen.eval_batch_size):
        batch = collate([dataset[i] for i in mine[start:start + gen.eval_batch_size]])
        new_ids = generate_batch(model, tokenizer, batch["input_ids"].to(device),
                                 batch["attention_mask"].to(device), gen, synced_gpus=synced_gpus)
        for idx, ids in zip(batch["index"].tolist(), new_ids):
            records.append({"index": idx, "response": tokenizer.decode(ids, skip_special_tokens=True).strip(),
                            "num_tokens": len(ids)})
        if progress is not None:
            progress(min(start + gen.eval_batch_size, len(mine)), len(mine))
    if was_training:
        model.train()
    merged: dict[int, dict[str, Any]] = {}
    for part in all_gather_objects(records):
        for rec in part:
            merged.setdefault(rec["index"], rec)  # padding repeats an index; keep one
    return [merged[i] for i in order]
