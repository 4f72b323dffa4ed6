"""data_utils/datasets.py: the training collator (pre-shifted labels, -100 off the response, EOS, truncation) and the
generation collator (left padding, prompt truncation), each checked against batches built here token by token."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
import torch

from data_utils.datasets import IGNORE_INDEX, LMCollator, PromptCollator

PAD, EOS = 0, 99


def item(i: int, prompt: list[int], response: list[int]) -> dict:
    return {"index": i, "prompt": np.array(prompt, dtype=np.int64), "response": np.array(response, dtype=np.int64)}


def expected_lm_rows(prompt: list[int], response: list[int], eos: Optional[int], max_length: int,
                     width: int) -> tuple[list[int], list[int], list[int]]:
    """(input_ids, attention_mask, labels) of one row, position by position: the text is prompt + response (+ EOS),
    cut to max_length; position t reads text[t] and, when text[t + 1] is a response token (or the EOS), is scored
    against it; everything after the text is padding."""
    text = (prompt + response + ([eos] if eos is not None else []))[:max_length]
    ids, mask, labels = [], [], []
    for t in range(width):
        real = t + 1 < len(text)  # a position is kept when a next token exists to be its label
        ids.append(text[t] if real else PAD)
        mask.append(1 if real else 0)
        labels.append(text[t + 1] if real and t + 1 >= len(prompt) else IGNORE_INDEX)
    return ids, mask, labels


@pytest.mark.parametrize("max_length", [64, 6, 3])
def test_lm_collator_shifts_masks_the_prompt_and_pads(max_length: int) -> None:
    rows = [([5, 6, 7], [8, 9]), ([5], [10, 11, 12, 13]), ([20, 21, 22, 23, 24], [25]), ([], [30, 31])]
    batch = LMCollator(PAD, EOS, max_length)([item(i, p, r) for i, (p, r) in enumerate(rows)])
    width = max(min(len(p) + len(r) + 1, max_length) for p, r in rows) - 1
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (len(rows), width)
    for b, (p, r) in enumerate(rows):
        ids, mask, labels = expected_lm_rows(p, r, EOS, max_length, width)
        assert batch["input_ids"][b].tolist() == ids, b
        assert batch["attention_mask"][b].tolist() == mask, b
        assert batch["labels"][b].tolist() == labels, b
    assert batch["index"].tolist() == [0, 1, 2, 3]


def test_lm_collator_labels_are_the_next_tokens_of_the_response_then_eos() -> None:
    # Read the other way: labels[t] is the token after input_ids[t]; the scored tokens, in order, are the response
    # and its EOS — and nothing of the prompt or the padding.
    prompt, response = [3, 4, 5], [6, 7]
    batch = LMCollator(PAD, EOS, 64)([item(0, prompt, response), item(1, [1], [2, 2, 2, 2, 2, 2])])
    labels, ids = batch["labels"][0], batch["input_ids"][0]
    scored = labels != IGNORE_INDEX
    assert labels[scored].tolist() == response + [EOS]
    positions = scored.nonzero().flatten().tolist()
    assert positions[0] == len(prompt) - 1  # the first response token is predicted from the last prompt token
    for t in positions[:-1]:
        assert labels[t] == ids[t + 1]
    assert not bool(batch["attention_mask"][0, positions[-1] + 1:].any())  # then only padding


def test_lm_collator_truncation_drops_the_eos_and_can_leave_nothing_to_score() -> None:
    collate = LMCollator(PAD, EOS, 4)
    batch = collate([item(0, [1, 2], [3, 4, 5]), item(1, [1, 2, 3, 4, 5, 6], [7])])
    # Row 0: text 1 2 3 4 | 5 EOS cut -> targets 3 4, no EOS (the answer does not end inside max_length).
    assert batch["labels"][0].tolist() == [IGNORE_INDEX, 3, 4]
    # Row 1: the prompt alone fills max_length -> no response token survives, no loss from this row.
    assert bool((batch["labels"][1] == IGNORE_INDEX).all()) and batch["attention_mask"][1].tolist() == [1, 1, 1]


@pytest.mark.parametrize("append_eos, eos", [(False, EOS), (True, None)])
def test_lm_collator_without_eos_scores_every_token_of_a_packed_chunk(append_eos: bool, eos: Optional[int]) -> None:
    # The pretraining corpus (LMDataset): prompt length 0, no EOS; every token but the first is a target.
    chunk = [11, 12, 13, 14]
    batch = LMCollator(PAD, eos, 64, append_eos=append_eos)([item(0, [], chunk)])
    assert batch["input_ids"][0].tolist() == chunk[:-1] and batch["labels"][0].tolist() == chunk[1:]


def test_lm_collator_a_one_token_row_is_all_padding() -> None:
    batch = LMCollator(PAD, None, 64, append_eos=False)([item(0, [], [7]), item(1, [1], [2, 3])])
    assert batch["attention_mask"][0].tolist() == [0, 0] and bool((batch["labels"][0] == IGNORE_INDEX).all())


@pytest.mark.parametrize("max_prompt_length", [100, 3])
def test_prompt_collator_left_pads_and_keeps_the_last_tokens(max_prompt_length: int) -> None:
    prompts = [[1, 2, 3, 4, 5], [6], [7, 8]]
    batch = PromptCollator(PAD, max_prompt_length)([item(i, p, [42]) for i, p in enumerate(prompts)])
    kept = [p[max(len(p) - max_prompt_length, 0):] for p in prompts]
    width = max(len(k) for k in kept)
    for b, k in enumerate(kept):
        assert batch["input_ids"][b].tolist() == [PAD] * (width - len(k)) + k
        assert batch["attention_mask"][b].tolist() == [0] * (width - len(k)) + [1] * len(k)
    assert batch["index"].tolist() == [0, 1, 2]
    # The responses are not part of a generation batch.
    assert 42 not in batch["input_ids"].tolist()


def test_prompt_collator_empty_prompts_give_one_masked_column() -> None:
    batch = PromptCollator(PAD, 8)([item(0, [], [1])])
    assert batch["input_ids"].tolist() == [[PAD]] and batch["attention_mask"].tolist() == [[0]]
    assert batch["input_ids"].dtype == torch.long
