"""--length-pieces: each micro-batch runs as pieces of rows of similar length, each cut to its own longest row.

data_utils.datasets.split_by_length on a hand-made batch, then the trainer: the same run with and without pieces
trains the same weights and logs the same losses (same examples and normalisation, less padding)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_sft
from data_utils.datasets import IGNORE_INDEX, split_by_length
from tests.conftest import read_metrics, tiny_train_args


def padded_batch(lengths: list[int], width: int) -> dict[str, torch.Tensor]:
    rows = len(lengths)
    ids = torch.zeros(rows, width, dtype=torch.long)
    mask = torch.zeros(rows, width, dtype=torch.long)
    labels = torch.full((rows, width), IGNORE_INDEX)
    for r, n in enumerate(lengths):
        ids[r, :n] = torch.arange(1, n + 1) + 100 * r
        mask[r, :n] = 1
        labels[r, n // 2:n] = ids[r, n // 2:n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "index": torch.arange(rows)}


def test_split_keeps_every_row_whole_and_cuts_padding() -> None:
    lengths = [9, 2, 7, 3, 12, 4, 5]
    batch = padded_batch(lengths, 12)
    pieces = split_by_length(batch, 3)
    assert len(pieces) == 3
    seen = []
    for p in pieces:
        width = int(p["attention_mask"].sum(dim=1).max())
        assert p["input_ids"].shape[1] == p["labels"].shape[1] == width  # cut to the piece's longest row
        for r, idx in enumerate(p["index"].tolist()):
            n = lengths[idx]
            assert torch.equal(p["input_ids"][r, :n], batch["input_ids"][idx, :n])
            assert torch.equal(p["labels"][r], batch["labels"][idx, :width])
            seen.append(idx)
    assert sorted(seen) == list(range(len(lengths)))
    # Rows of similar length go together: the pieces hold the shortest, middle and longest rows.
    assert [sorted(lengths[i] for i in p["index"].tolist()) for p in pieces] == [[2, 3, 4], [5, 7], [9, 12]]
    padded = sum(p["input_ids"].numel() for p in pieces)
    assert padded < batch["input_ids"].numel()
    # Counted response tokens are unchanged.
    assert sum(int((p["labels"] != IGNORE_INDEX).sum()) for p in pieces) == int((batch["labels"] != IGNORE_INDEX).sum())
    assert split_by_length(batch, 1) == [batch]
    assert len(split_by_length(padded_batch([3, 4], 4), 5)) == 2  # never an empty piece


@pytest.mark.usefixtures("in_process")
def test_pieces_train_the_same_model(tiny_models: dict, processed_tiny: Path, tmp_path: Path) -> None:
    """Batch 6 x 2 accumulation in 4 pieces, against the same run in one piece, over the first epoch's end: 200
    examples make 33 batches of 6 and a last one of 2, whose 2 missing pieces are label-free fillers."""
    from data_utils.datasets import InstructionDataset

    n = len(InstructionDataset(processed_tiny, "train"))
    assert 0 < n % 6 < 4 and -(-n // 6) <= 18 * 2, n  # the epoch's last batch is short, and these steps reach it
    student = tiny_models["gpt2"]["student"]
    common = ("--total-iters", "18", "--lr", "1e-3", "--lr-schedule", "constant", "--dev-num", "4",
              "--eval-batch-size", "4", "--batch-size", "6", "--gradient-accumulation-steps", "2")
    runs = {k: tmp_path / f"pieces{k}" for k in (1, 4)}
    for k, save in runs.items():
        train_sft.main(tiny_train_args(student, processed_tiny, save, *common, "--length-pieces", str(k)))
    ce = {k: [m["train/ce"] for m in read_metrics(r) if "train/ce" in m] for k, r in runs.items()}
    assert len(ce[1]) == 18 and ce[4] == pytest.approx(ce[1], abs=1e-5)
    w1, w4 = load_file(str(runs[1] / "18" / "model.safetensors")), load_file(str(runs[4] / "18" / "model.safetensors"))
    init = load_file(str(student / "model.safetensors"))
    assert max(float((w1[k] - init[k]).abs().max()) for k in w1) > 1e-3  # it trained
    assert max(float((w1[k] - w4[k]).abs().max()) for k in w1) < 1e-5
