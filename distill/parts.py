"""Resumable work in parts, shared by SeqKD data generation (``tools/generate_data.py``) and SRD's reflection
(:mod:`distill.srd`).

A long job over ``n`` examples is cut into parts of ``part_size`` consecutive examples (:func:`part_ranges`). Each
finished part is written atomically as ``<parts dir>/part_XXXXX.jsonl``, one record per example carrying its
``index``, next to the ``settings.json`` of the run that made it (:class:`PartStore`). A restart with the same
settings computes only the parts that are missing or do not hold exactly their examples; other settings stop with a
one-line error instead of mixing two runs in one directory. Sampled parts draw from :func:`part_seed`, so a resumed
run samples what an uninterrupted one would.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from data_utils.atomic import write_json_atomic, write_jsonl_atomic
from data_utils.splits import split_prefix
from distill.config import InputError
from distill.progress import DEFAULT_INTERVAL, Progress, print_stamped

if TYPE_CHECKING:
    from distill import dist

SETTINGS_FILE = "settings.json"
#: Seeds of consecutive parts are this far apart, so that ``seed + rank`` (added by generate_split) never reaches the
#: next part's seed for any realistic world size.
PART_SEED_STRIDE = 100_003


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------
def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------------------------------------------
# Content fingerprints: a resumed run must be fed what the stored parts were made from. Contents, not paths: a copied
# or moved checkpoint or dataset still matches, a checkpoint retrained into the same directory does not.
# ----------------------------------------------------------------------------------------------------------------
#: The files of a model (or LoRA adapter) directory that decide what it computes: weights, architecture, tokenizer.
#: Optimizer state, RNG state and trainer logs are left out (they differ between copies of the same weights).
MODEL_FILES = ("config.json", "generation_config.json", "*.safetensors", "pytorch_model*.bin", "adapter_config.json",
               "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "merges.txt",
               "special_tokens_map.json", "added_tokens.json")


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_digest(paths: Sequence[Path]) -> str:
    """One sha256 over the names and contents of ``paths`` (order-independent)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda q: q.name):
        h.update(f"{p.name}\0{file_digest(p)}\n".encode())
    return h.hexdigest()


def model_digest(path: Optional[str | Path]) -> Optional[str]:
    """Fingerprint of a model or adapter directory (:data:`MODEL_FILES`); None for no path. An adapter names its base
    model by path in ``adapter_config.json``, so the base enters by that path."""
    if path is None:
        return None
    root = Path(path)
    files = {f for pattern in MODEL_FILES for f in root.glob(pattern) if f.is_file()}
    if not files:
        raise InputError(f"{path}: no model files ({', '.join(MODEL_FILES[:3])}, ...) to fingerprint")
    return files_digest(list(files))


def split_digest(data_dir: str | Path, split: str) -> str:
    """Fingerprint of a processed split: its token ids (``<split>_0.bin/.idx``) and, when present, its raw records
    (``<split>.jsonl``, whose references Rouge-L reads)."""
    prefix = split_prefix(Path(data_dir), split)
    files = [prefix.with_suffix(".bin"), prefix.with_suffix(".idx"), Path(data_dir) / f"{split}.jsonl"]
    return files_digest([f for f in files if f.is_file()])


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------------------------
def part_ranges(n: int, part_size: int) -> list[range]:
    """Example indices of each part: ``[0, part_size), [part_size, 2 * part_size), ...`` covering ``range(n)``."""
    return [range(start, min(start + part_size, n)) for start in range(0, n, part_size)]


def part_seed(seed: int, k: int) -> int:
    """The sampling seed of part ``k``: fixed by the run's seed and the part number, not by what ran before."""
    return seed + k * PART_SEED_STRIDE


def flatten(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"generation": {"top_p": 1.0}}`` -> ``{"generation.top_p": 1.0}``."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def settings_conflict(stored: dict[str, Any], current: dict[str, Any], by_leaf: bool = False) -> list[str]:
    """Names of the settings that differ between a stored run and this one: top-level keys, or with ``by_leaf``
    dotted leaves (``generation.top_p`` rather than ``generation``)."""
    a, b = (flatten(stored), flatten(current)) if by_leaf else (stored, current)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def rank0_decides(env: dist.DistEnv, fn: Callable[[], Any]) -> Any:
    """Runs ``fn()`` on rank 0 only and hands every rank its result, or re-raises its InputError on every rank (so
    no rank is left waiting in a collective while rank 0 has stopped)."""
    out: Any = None
    if env.is_main:
        try:
            out = ("ok", fn())
        except (InputError, FileNotFoundError) as e:
            out = ("error", str(e))
    from distill import dist  # torch: only once there is work to coordinate

    status, value = dist.all_gather_objects(out)[0]
    if status == "error":
        raise InputError(value)
    return value


# ----------------------------------------------------------------------------------------------------------------
# The store
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PartStore:
    """A directory of finished parts (``part_XXXXX.jsonl``) and the ``settings.json`` of the run that wrote them.

    ``by_leaf`` names conflicting settings by their dotted leaves (see :func:`settings_conflict`).
    """

    root: Path
    by_leaf: bool = False

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_FILE

    def part_path(self, k: int) -> Path:
        return self.root / f"part_{k:05d}.jsonl"

    def read_part(self, k: int, indices: range) -> Optional[list[dict[str, Any]]]:
        """The records of finished part ``k``, or None when it is missing or does not hold exactly ``indices`` in
        order (an interrupted copy, a part of another split)."""
        path = self.part_path(k)
        if not path.is_file():
            return None
        try:
            recs = read_jsonl(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if [r.get("index") if isinstance(r, dict) else None for r in recs] != list(indices):
            return None
        return recs

    def conflicts(self, settings: dict[str, Any]) -> Optional[list[str]]:
        """The settings that differ from the stored ones, or None when no settings are stored."""
        if not self.settings_path.is_file():
            return None
        stored = json.loads(self.settings_path.read_text(encoding="utf-8"))
        return settings_conflict(stored, settings, self.by_leaf)

    def pending(self, parts: Sequence[range], settings: dict[str, Any], fix: str) -> list[int]:
        """Numbers of the parts still to compute. Raises InputError, ending with ``fix`` (how to resume or start
        over), when the directory holds parts of a run with other settings, or parts with no settings at all."""
        diff = self.conflicts(settings)
        if diff:
            raise InputError(f"{self.root} holds parts made with other settings ({', '.join(diff)} differ); {fix}")
        if diff is None and self.root.is_dir() and any(self.root.glob("part_*.jsonl")):
            raise InputError(f"{self.root} holds parts but no {SETTINGS_FILE}, so they cannot be trusted; "
                             f"delete {self.root} to start over")
        return [k for k, idx in enumerate(parts) if self.read_part(k, idx) is None]

    def plan(self, parts: Sequence[range], settings: dict[str, Any], fix: str) -> list[int]:
        """:meth:`pending`, then records ``settings`` as the directory's own (creating it): run on rank 0."""
        todo = self.pending(parts, settings, fix)
        write_json_atomic(self.settings_path, settings)
        return todo

    def write_part(self, k: int, records: Sequence[dict[str, Any]]) -> None:
        write_jsonl_atomic(self.part_path(k), records)

    def gather(self, parts: Sequence[range]) -> list[dict[str, Any]]:
        """Every part's records, in example order; RuntimeError when one is missing (a bug: call after computing)."""
        out: list[dict[str, Any]] = []
        for k, idx in enumerate(parts):
            recs = self.read_part(k, idx)
            if recs is None:
                raise RuntimeError(f"{self.part_path(k)} is missing or incomplete after every part was computed")
            out.extend(recs)
        return out


def compute_parts(store: PartStore, parts: Sequence[range], todo: Sequence[int], env: dist.DistEnv,
                  compute: Callable[[int, Callable[[int, int], None]], list[dict[str, Any]]], label: str,
                  note: Callable[[list[dict[str, Any]]], str] = lambda recs: "",
                  progress_interval: float = DEFAULT_INTERVAL) -> None:
    """Computes each part of ``todo`` with ``compute(k, within)`` (called on every rank: it may use collectives),
    writes it on rank 0 and logs one line per part there; ``note(records)`` adds to that line.

    ``within(done, total)`` is for progress inside a part (e.g. generate_split's ``progress``): rank 0 prints a line
    with the examples done over all parts of ``todo`` every ``progress_interval`` seconds, also mid-part."""
    from distill import dist

    total = sum(len(parts[k]) for k in todo)
    emit = print_stamped if env.is_main else (lambda line: None)
    with Progress(f"{label}s: examples", total, emit, progress_interval) as progress:
        finished = 0
        for n, k in enumerate(todo, 1):
            t0 = time.time()
            size = len(parts[k])

            def within(done: int, of: int, base: int = finished, size: int = size) -> None:
                progress.update(base + (size * done // of if of else 0), note=f"{label} {k} ({n}/{len(todo)})")

            recs = compute(k, within)
            finished += size
            progress.update(finished)
            if env.is_main:
                store.write_part(k, recs)
                print(f"{label} {k} ({n}/{len(todo)}): examples {parts[k].start}-{parts[k].stop - 1}, "
                      f"{time.time() - t0:.1f} s{note(recs)}", flush=True)
            # No rank starts the next part (and its collectives) before this one is on disk.
            dist.barrier()
