"""Indexed binary dataset: token sequences split into a prompt part and a response part, memory-mapped.

A dataset is a pair of files sharing a path prefix:

``{prefix}.bin``
    All token ids of all examples, back to back, with no separators, as a flat array of ``uint16``
    (when the vocabulary has at most 65536 entries) or ``uint32`` (larger vocabularies). Example ``i`` occupies
    elements ``pointers[i] : pointers[i] + sizes[i]``; its first ``prompt_lengths[i]`` elements are the prompt and
    the rest is the response.

``{prefix}.idx`` (little-endian, no padding)
    ============  ==========================  =========================================================
    offset        type                        meaning
    ============  ==========================  =========================================================
    0             8 bytes                     magic ``b"DSTLIDX1"``
    8             uint8                       dtype code of ``.bin``: 1 = uint16, 2 = uint32
    9             uint64                      ``count``, the number of examples N
    17            int32[N]                    ``sizes``: full length (prompt + response) of each example
    17 + 4N       int32[N]                    ``prompt_lengths``: prompt length of each example
    17 + 8N       int64[N]                    ``pointers``: element (not byte) offset of each example in ``.bin``
    ============  ==========================  =========================================================

The reader checks the magic, the dtype code, the exact file length, that ``pointers`` is the exclusive cumulative
sum of ``sizes``, that ``0 <= prompt_lengths <= sizes``, and that ``.bin`` holds exactly ``sum(sizes)`` elements, so a
truncated or mismatched pair is reported instead of silently read. Where the directory's ``meta.json`` records the
vocabulary size (the processing tools write it), the ``.bin`` dtype must be the one that size is stored in, and every
token id must be below it (and below the caller's ``vocab_size``, the tokenizer's length, where given): a corrupted
``.bin`` is refused when opened instead of indexing past the embedding. The scan is one vectorised max over the
memory map, in chunks (about 0.3 s per GB).

Pretraining data is stored in the same format with ``prompt_lengths == 0``.
The files are made by ``tools/process_data_dolly.py`` (instruction data) and ``tools/process_data_pretrain.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Sequence

import numpy as np

from data_utils.processing import DataError, read_meta

MAGIC = b"DSTLIDX1"
_HEADER_BYTES = len(MAGIC) + 1 + 8
_DTYPE_CODES: dict[int, np.dtype] = {1: np.dtype(np.uint16), 2: np.dtype(np.uint32)}
_CODE_OF_DTYPE: dict[np.dtype, int] = {v: k for k, v in _DTYPE_CODES.items()}
_MAKERS = "tools/process_data_dolly.py (instruction data) or tools/process_data_pretrain.py (pretraining data)"
_SCAN_CHUNK = 1 << 24  # elements per step of the token-id scan: 32-64 MB of the memory map at a time


def _file_mode() -> int:
    """Permissions a plainly created file would get (mkstemp makes 0600, too strict for shared data)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds ids ``0 .. vocab_size - 1`` (uint16 up to 65536 entries, else uint32)."""
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool) or vocab_size <= 0:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    if vocab_size <= 2**16:
        return np.dtype(np.uint16)
    if vocab_size <= 2**32:
        return np.dtype(np.uint32)
    raise ValueError(f"vocab_size {vocab_size} does not fit uint32 token ids (max 2**32)")


def bin_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.idx")


def _as_id_array(ids: Sequence[int], vocab_size: int, what: str) -> np.ndarray:
    """Validate a token id sequence and return it as int64 [L]; ValueError on non-integers or ids out of range."""
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a flat sequence of token ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what} must hold integer token ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"{what} holds token id {bad}, outside 0..{vocab_size - 1}: "
            f"pass the tokenizer's full length (len(tokenizer)) as vocab_size"
        )
    return arr


class IndexedDatasetBuilder:
    """Streams (prompt, response) token sequences into ``{prefix}.bin`` / ``{prefix}.idx``.

    Use as a context manager: the files appear only when the ``with`` block ends without an exception (or when
    :meth:`finalize` is called); until then everything goes to temporary files in the same directory, which are
    removed if the block raises, so a failed run never leaves a half-written dataset.
    """

    def __init__(self, path_prefix: str | Path, vocab_size: int):
        self.prefix = Path(path_prefix)
        self.vocab_size = int(vocab_size)
        self.dtype = dtype_for_vocab(vocab_size)
        parent = self.prefix.parent
        if not parent.is_dir():
            raise FileNotFoundError(
                f"{parent}: output directory does not exist; create it before building {self.prefix}"
            )
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{self.prefix.name}.", suffix=".bin.tmp")
        self._tmp_bin = Path(tmp)
        self._bin = os.fdopen(fd, "wb")
        self._sizes: list[int] = []
        self._prompt_lengths: list[int] = []
        self._finished = False

    def add(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> None:
        """Append one example. Either part may be empty (pretraining chunks: empty prompt), not both."""
        if self._finished:
            raise RuntimeError(f"builder for {self.prefix} is already finalized or aborted")
        p = _as_id_array(prompt_ids, self.vocab_size, "prompt_ids")
        r = _as_id_array(response_ids, self.vocab_size, "response_ids")
        size = p.size + r.size
        if size == 0:
            raise ValueError("an example needs at least one token (prompt and response are both empty)")
        if size > np.iinfo(np.int32).max:
            raise ValueError(f"example of {size} tokens exceeds the int32 length field")
        self._bin.write(np.concatenate([p, r]).astype(self.dtype).tobytes())
        self._sizes.append(size)
        self._prompt_lengths.append(p.size)

    def __len__(self) -> int:
        return len(self._sizes)

    def finalize(self) -> None:
        """Write the index and move both files into place (``.bin`` first; the reader rejects a mismatched pair)."""
        if self._finished:
            raise RuntimeError(f"builder for {self.prefix} is already finalized or aborted")
        self._finished = True
        tmp_idx: Path | None = None
        try:
            self._bin.close()
            sizes = np.asarray(self._sizes, dtype=np.int32)
            pointers = np.zeros(len(sizes), dtype=np.int64)
            if len(sizes) > 1:
                np.cumsum(sizes[:-1], dtype=np.int64, out=pointers[1:])
            fd, tmp = tempfile.mkstemp(dir=self.prefix.parent, prefix=f".{self.prefix.name}.", suffix=".idx.tmp")
            tmp_idx = Path(tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC)
                f.write(np.uint8(_CODE_OF_DTYPE[self.dtype]).tobytes())
                f.write(np.uint64(len(sizes)).astype("<u8").tobytes())
                f.write(sizes.astype("<i4").tobytes())
                f.write(np.asarray(self._prompt_lengths, dtype="<i4").tobytes())
                f.write(pointers.astype("<i8").tobytes())
            for p in (self._tmp_bin, tmp_idx):
                p.chmod(_FILE_MODE)
            os.replace(self._tmp_bin, bin_path(self.prefix))
            os.replace(tmp_idx, idx_path(self.prefix))
        except BaseException:
            for p in (self._tmp_bin, tmp_idx):
                if p is not None and p.exists():
                    p.unlink()
            raise

    def abort(self) -> None:
        """Drop everything written so far; no output files are created."""
        if self._finished:
            return
        self._finished = True
        self._bin.close()
        if self._tmp_bin.exists():
            self._tmp_bin.unlink()

    def __enter__(self) -> "IndexedDatasetBuilder":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._finished:
            self.finalize()


class IndexedDataset:
    """Read-only, memory-mapped view of a ``{prefix}.bin`` / ``{prefix}.idx`` pair (see the module docstring).

    ``ds[i]`` is the full sequence (prompt + response) of example ``i`` as int64 [sizes[i]];
    :meth:`prompt` and :meth:`response` give the two parts. ``vocab_size`` (the tokenizer's length, where the caller
    has it) bounds the token ids besides ``meta.json``'s vocabulary size. Errors in the files are DataError (a
    ValueError) naming the file.
    """

    def __init__(self, path_prefix: str | Path, vocab_size: int | None = None, *, _ids_checked: bool = False):
        self.prefix = Path(path_prefix)
        self.vocab_size = vocab_size
        ipath, bpath = idx_path(self.prefix), bin_path(self.prefix)
        for p in (ipath, bpath):
            if not p.is_file():
                raise FileNotFoundError(f"{p}: indexed dataset file missing; make it with {_MAKERS}")
        self.dtype, self.sizes, self.prompt_lengths, self._pointers = self._read_index(ipath)
        expected = int(self.sizes.sum(dtype=np.int64)) * self.dtype.itemsize
        actual = bpath.stat().st_size
        if actual != expected:
            raise DataError(
                f"{bpath}: {actual} bytes but {ipath} describes {expected}; the pair is truncated or mismatched — "
                f"remake it with {_MAKERS}"
            )
        # np.memmap cannot map an empty file; a dataset without tokens is just an empty array.
        self._data = np.memmap(bpath, dtype=self.dtype, mode="r") if actual else np.zeros(0, dtype=self.dtype)
        if not _ids_checked:  # a copy unpickled in a DataLoader worker was checked where it was made
            self._check_ids(bpath)

    def _check_ids(self, bpath: Path) -> None:
        """The dtype ``meta.json``'s vocabulary is stored in, and every token id below the vocabulary."""
        hint = f"the file is corrupted or does not belong to this directory — re-process the data with {_MAKERS}"
        meta_vocab = (read_meta(self.prefix.parent) or {}).get("vocab_size")
        bounds = []
        if isinstance(meta_vocab, int) and not isinstance(meta_vocab, bool) and meta_vocab > 0:
            want = dtype_for_vocab(meta_vocab) if meta_vocab <= 2**32 else None
            if want is not None and want != self.dtype:
                raise DataError(f"{bpath}: token ids stored as {self.dtype.name}, but meta.json's vocabulary of "
                                f"{meta_vocab} is stored as {want.name}; {hint}")
            bounds.append((meta_vocab, f"meta.json's vocabulary of {meta_vocab}"))
        if self.vocab_size is not None:
            bounds.append((int(self.vocab_size), f"the tokenizer's {int(self.vocab_size)} tokens"))
        if not bounds or self._data.size == 0:
            return
        bound, what = min(bounds)
        if bound > np.iinfo(self.dtype).max:
            return  # no stored value can reach it
        top = max(int(self._data[i : i + _SCAN_CHUNK].max()) for i in range(0, self._data.size, _SCAN_CHUNK))
        if top >= bound:
            raise DataError(f"{bpath}: token id {top} is outside {what} (ids 0..{bound - 1}); {hint}")

    @staticmethod
    def _read_index(ipath: Path) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
        """Parse and validate ``.idx``: (dtype, sizes int32 [N], prompt_lengths int32 [N], pointers int64 [N])."""
        hint = f"remake it with {_MAKERS}"
        raw = ipath.read_bytes()
        if len(raw) < _HEADER_BYTES or raw[: len(MAGIC)] != MAGIC:
            raise DataError(f"{ipath}: not an indexed-dataset index (bad magic); {hint}")
        code = raw[len(MAGIC)]
        if code not in _DTYPE_CODES:
            raise DataError(f"{ipath}: unknown token dtype code {code}; {hint}")
        count = int(np.frombuffer(raw, dtype="<u8", count=1, offset=len(MAGIC) + 1)[0])
        if len(raw) != _HEADER_BYTES + count * (4 + 4 + 8):
            raise DataError(f"{ipath}: {len(raw)} bytes, inconsistent with {count} examples (truncated?); {hint}")
        off = _HEADER_BYTES
        sizes = np.frombuffer(raw, dtype="<i4", count=count, offset=off).astype(np.int32)
        prompt_lengths = np.frombuffer(raw, dtype="<i4", count=count, offset=off + 4 * count).astype(np.int32)
        pointers = np.frombuffer(raw, dtype="<i8", count=count, offset=off + 8 * count).astype(np.int64)
        expected_ptr = np.zeros(count, dtype=np.int64)
        if count > 1:
            np.cumsum(sizes[:-1], dtype=np.int64, out=expected_ptr[1:])
        if (sizes < 0).any() or (prompt_lengths < 0).any() or (prompt_lengths > sizes).any():
            raise DataError(f"{ipath}: negative sizes or prompt lengths longer than their examples; {hint}")
        if not np.array_equal(pointers, expected_ptr):
            raise DataError(f"{ipath}: pointers do not match the example sizes; {hint}")
        return _DTYPE_CODES[code], sizes, prompt_lengths, pointers

    def __len__(self) -> int:
        return int(self.sizes.shape[0])

    def _index(self, i: int) -> int:
        n = len(self)
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"index must be an integer, got {type(i).__name__}")
        j = int(i) + n if i < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"index {i} out of range for {n} examples in {self.prefix}")
        return j

    def _slice(self, start: int, length: int) -> np.ndarray:
        return np.array(self._data[start : start + length], dtype=np.int64)

    def __getitem__(self, i: int) -> np.ndarray:
        """Full sequence of example ``i``: int64 [sizes[i]]."""
        j = self._index(i)
        return self._slice(int(self._pointers[j]), int(self.sizes[j]))

    def prompt(self, i: int) -> np.ndarray:
        """Prompt of example ``i``: int64 [prompt_lengths[i]]."""
        j = self._index(i)
        return self._slice(int(self._pointers[j]), int(self.prompt_lengths[j]))

    def response(self, i: int) -> np.ndarray:
        """Response of example ``i``: int64 [sizes[i] - prompt_lengths[i]]."""
        j = self._index(i)
        p = int(self.prompt_lengths[j])
        return self._slice(int(self._pointers[j]) + p, int(self.sizes[j]) - p)

    def __getstate__(self) -> dict:
        # Pickle (e.g. DataLoader workers under spawn) by path: pickling the memmap would copy every token.
        return {"prefix": str(self.prefix), "vocab_size": self.vocab_size}

    def __setstate__(self, state: dict) -> None:
        # The index is re-validated (cheap); the token-id scan was done where the dataset was first opened.
        self.__init__(state["prefix"], state.get("vocab_size"), _ids_checked=True)

    def __repr__(self) -> str:
        return f"IndexedDataset({str(self.prefix)!r}, n={len(self)}, dtype={self.dtype.name})"
