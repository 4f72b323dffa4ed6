"""Indexed binary format: round trips (uint16 / uint32), the documented .idx layout, and error handling."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from data_utils.indexed_dataset import MAGIC, IndexedDataset, IndexedDatasetBuilder, dtype_for_vocab

TEXTS = [
    ("Below is an instruction.\n\n### Response:\n", "Hello, world!"),
    ("Übersetze: café ☕\n", "Coffee — naïve façade.\n\nTwo lines."),
    ("Only a prompt, empty response.", ""),
    ("", "A pretraining chunk has no prompt at all."),
]


def _build(prefix: Path, vocab_size: int, pairs: list[tuple[list[int], list[int]]]) -> IndexedDataset:
    with IndexedDatasetBuilder(prefix, vocab_size) as b:
        for p, r in pairs:
            b.add(p, r)
    return IndexedDataset(prefix)


def test_round_trip_equals_tokenizer_output(tmp_path: Path, tiny_tokenizer_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    pairs = [(tok.encode(p, add_special_tokens=False), tok.encode(r, add_special_tokens=False)) for p, r in TEXTS]
    ds = _build(tmp_path / "train_0", len(tok), pairs)

    assert ds.dtype == np.uint16 and len(ds) == len(TEXTS)
    np.testing.assert_array_equal(ds.sizes, [len(p) + len(r) for p, r in pairs])
    np.testing.assert_array_equal(ds.prompt_lengths, [len(p) for p, _ in pairs])
    for i, ((p_ids, r_ids), (p_text, r_text)) in enumerate(zip(pairs, TEXTS)):
        assert ds[i].dtype == np.int64 and ds.prompt(i).dtype == np.int64
        assert ds[i].tolist() == p_ids + r_ids
        assert ds.prompt(i).tolist() == p_ids
        assert ds.response(i).tolist() == r_ids
        assert tok.decode(ds.prompt(i)) == p_text
        assert tok.decode(ds.response(i)) == r_text
    assert ds[-1].tolist() == ds[len(ds) - 1].tolist()


def test_uint32_path_for_large_vocab(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lengths = [(3, 5), (0, 7), (4, 0)]
    pairs = [(rng.integers(0, 70000, n).tolist(), rng.integers(0, 70000, m).tolist()) for n, m in lengths]
    pairs.append(([69999, 65536], [65535, 0]))  # ids around the uint16 limit must survive
    ds = _build(tmp_path / "big", 70000, pairs)
    assert ds.dtype == np.uint32
    for i, (p, r) in enumerate(pairs):
        assert ds.prompt(i).tolist() == p and ds.response(i).tolist() == r
    assert (tmp_path / "big.bin").stat().st_size == 4 * sum(len(p) + len(r) for p, r in pairs)


def test_dtype_for_vocab_boundaries() -> None:
    assert dtype_for_vocab(65536) == np.uint16
    assert dtype_for_vocab(65537) == np.uint32
    with pytest.raises(ValueError):
        dtype_for_vocab(0)


def test_idx_layout_matches_documentation(tmp_path: Path) -> None:
    _build(tmp_path / "d", 100, [([1, 2], [3]), ([4], [5, 6, 7])])
    raw = (tmp_path / "d.idx").read_bytes()
    assert raw[:8] == MAGIC == b"DSTLIDX1"
    code, count = struct.unpack_from("<BQ", raw, 8)
    assert (code, count) == (1, 2)
    sizes = struct.unpack_from("<2i", raw, 17)
    prompt_lengths = struct.unpack_from("<2i", raw, 25)
    pointers = struct.unpack_from("<2q", raw, 33)
    assert sizes == (3, 4) and prompt_lengths == (2, 1) and pointers == (0, 3)
    assert len(raw) == 17 + 2 * (4 + 4 + 8)
    assert np.fromfile(tmp_path / "d.bin", dtype="<u2").tolist() == [1, 2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize(
    "prompt, response",
    [([5, 100], [1]), ([1], [-1]), ([1.5], [2]), ([], [])],
    ids=["id_equal_to_vocab", "negative_id", "float_id", "both_empty"],
)
def test_bad_ids_rejected(tmp_path: Path, prompt: list, response: list) -> None:
    with IndexedDatasetBuilder(tmp_path / "x", 100) as b:
        with pytest.raises(ValueError):
            b.add(prompt, response)
        b.add([1], [2])  # the builder stays usable after a rejected example
    assert len(IndexedDataset(tmp_path / "x")) == 1


def test_exception_inside_with_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with IndexedDatasetBuilder(tmp_path / "train_0", 100) as b:
            b.add([1, 2], [3])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_missing_files_name_path_and_tool(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.idx.*process_data_dolly\.py"):
        IndexedDataset(tmp_path / "nothing")


def test_corrupt_files_rejected(tmp_path: Path) -> None:
    _build(tmp_path / "d", 100, [([1, 2], [3]), ([4], [5, 6, 7])])
    bin_bytes, idx_bytes = (tmp_path / "d.bin").read_bytes(), (tmp_path / "d.idx").read_bytes()

    (tmp_path / "d.bin").write_bytes(bin_bytes[:-2])  # truncated .bin
    with pytest.raises(ValueError, match=r"d\.bin.*truncated or mismatched"):
        IndexedDataset(tmp_path / "d")
    (tmp_path / "d.bin").write_bytes(bin_bytes)

    (tmp_path / "d.idx").write_bytes(idx_bytes[:-4])  # truncated .idx
    with pytest.raises(ValueError, match=r"d\.idx"):
        IndexedDataset(tmp_path / "d")

    (tmp_path / "d.idx").write_bytes(b"XXXXXXXX" + idx_bytes[8:])  # bad magic
    with pytest.raises(ValueError, match="bad magic"):
        IndexedDataset(tmp_path / "d")

    bad_ptr = bytearray(idx_bytes)
    struct.pack_into("<q", bad_ptr, 33 + 8, 2)  # second pointer no longer equals sizes[0]
    (tmp_path / "d.idx").write_bytes(bytes(bad_ptr))
    with pytest.raises(ValueError, match="pointers"):
        IndexedDataset(tmp_path / "d")


def test_index_errors(tmp_path: Path) -> None:
    ds = _build(tmp_path / "d", 100, [([1], [2])])
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(IndexError):
        ds.prompt(-2)
    with pytest.raises(TypeError):
        ds[0.0]  # type: ignore[index]


def test_empty_dataset_reads_back(tmp_path: Path) -> None:
    with IndexedDatasetBuilder(tmp_path / "e", 100):
        pass
    ds = IndexedDataset(tmp_path / "e")
    assert len(ds) == 0 and ds.sizes.shape == (0,)


def test_pickles_by_path(tmp_path: Path) -> None:
    ds = _build(tmp_path / "d", 100, [([1, 2], [3]), ([4], [5, 6, 7])])
    blob = pickle.dumps(ds)
    assert len(blob) < 200 + len(str(tmp_path))  # the path, not the tokens
    again = pickle.loads(blob)
    assert [again[i].tolist() for i in range(2)] == [[1, 2, 3], [4, 5, 6, 7]]
    assert again.prompt_lengths.tolist() == [2, 1]
