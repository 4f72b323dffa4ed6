"""Resumable work in parts (distill/parts.py): part layout, settings checks, resume after an interruption, untrusted
(truncated, corrupt, foreign) parts redone, gather order. Pure file work on a world of one: no model, no process group.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from distill.config import InputError
from distill.dist import DistEnv
from distill.parts import (SETTINGS_FILE, PartStore, compute_parts, part_ranges, part_seed, rank0_decides,
                           settings_conflict)

MAIN = DistEnv(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
SETTINGS: dict[str, Any] = {"teacher": "ckpt/t", "num_examples": 10, "part_size": 4, "seed": 7,
                            "generation": {"top_p": 1.0, "max_new_tokens": 8}}
FIX = "run with those settings to resume, or delete the directory to start over"


def answer(i: int, tag: str = "") -> dict[str, Any]:
    """The record a part holds for example ``i`` (``tag`` tells apart which run wrote it)."""
    return {"index": i, "output": f"answer {i}{tag}"}


class Counter:
    """A ``compute(k, within)`` for :func:`compute_parts` that records which parts it was asked for; fails on
    ``fail_on``."""

    def __init__(self, parts: list[range], tag: str = "", fail_on: int | None = None) -> None:
        self.parts, self.tag, self.fail_on, self.calls = parts, tag, fail_on, []

    def __call__(self, k: int, within: Any = None) -> list[dict[str, Any]]:
        if k == self.fail_on:
            raise RuntimeError(f"interrupted in part {k}")
        self.calls.append(k)
        return [answer(i, self.tag) for i in self.parts[k]]


def run(store: PartStore, parts: list[range], compute: Counter, settings: dict[str, Any] = SETTINGS) -> list[int]:
    """One run as the tools do it on rank 0: plan, compute what is pending; returns the plan."""
    todo = rank0_decides(MAIN, lambda: store.plan(parts, settings, FIX))
    compute_parts(store, parts, todo, MAIN, compute, "part")
    return todo


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines(keepends=True)


# ------------------------------------------------------------------------------------------------------------------
# Pure helpers


@pytest.mark.parametrize("n, size", [(10, 4), (8, 4), (3, 4), (1, 1), (7, 1), (0, 5)])
def test_part_ranges_cover_every_example_once_in_order(n: int, size: int) -> None:
    parts = part_ranges(n, size)
    assert [i for p in parts for i in p] == list(range(n))
    assert len(parts) == -(-n // size)
    assert all(len(p) == size for p in parts[:-1]) and all(1 <= len(p) <= size for p in parts)
    assert all(p.step == 1 for p in parts)


def test_part_ranges_exact_values() -> None:
    assert part_ranges(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert part_ranges(8, 4) == [range(0, 4), range(4, 8)]
    assert part_ranges(0, 4) == []


def test_part_seeds_depend_only_on_seed_and_part_and_never_meet_with_rank_offsets() -> None:
    # As --seed's help and docs/seqkd.md promise: part k samples from seed + k * 100003 (the module's own constant
    # would only restate the code).
    assert part_seed(7, 0) == 7 and part_seed(7, 3) == 7 + 3 * 100_003
    # generate_split adds the rank: no (part, rank) pair of one run may share a seed with another.
    seeds = {part_seed(7, k) + rank for k in range(20) for rank in range(64)}
    assert len(seeds) == 20 * 64


def test_settings_conflict_names_top_level_keys_or_dotted_leaves() -> None:
    assert settings_conflict(SETTINGS, json.loads(json.dumps(SETTINGS))) == []
    changed = {**SETTINGS, "seed": 8, "generation": {**SETTINGS["generation"], "top_p": 0.9}}
    assert settings_conflict(SETTINGS, changed) == ["generation", "seed"]
    assert settings_conflict(SETTINGS, changed, by_leaf=True) == ["generation.top_p", "seed"]
    # A key only one side has is a difference too (a new option, or one dropped), in either direction.
    added = {**SETTINGS, "dtype": "bf16", "generation": {**SETTINGS["generation"], "top_k": 0}}
    assert settings_conflict(SETTINGS, added, by_leaf=True) == ["dtype", "generation.top_k"]
    assert settings_conflict(added, SETTINGS, by_leaf=True) == ["dtype", "generation.top_k"]
    assert settings_conflict(SETTINGS, {**SETTINGS, "teacher": None}) == ["teacher"]


# ------------------------------------------------------------------------------------------------------------------
# Planning and resuming


def test_fresh_run_plans_every_part_and_records_settings(tmp_path: Path) -> None:
    store = PartStore(tmp_path / "out" / ".parts", by_leaf=True)
    parts = part_ranges(10, 4)
    assert store.conflicts(SETTINGS) is None
    assert store.plan(parts, SETTINGS, FIX) == [0, 1, 2]
    assert json.loads(store.settings_path.read_text(encoding="utf-8")) == SETTINGS
    assert store.settings_path.name == SETTINGS_FILE and store.part_path(3).name == "part_00003.jsonl"
    assert store.conflicts(SETTINGS) == []


def test_finished_run_reuses_every_part(tmp_path: Path) -> None:
    store, parts = PartStore(tmp_path / "parts"), part_ranges(10, 4)
    first = Counter(parts)
    assert run(store, parts, first) == [0, 1, 2] and first.calls == [0, 1, 2]
    again = Counter(parts, tag=" again")
    assert run(store, parts, again) == [] and again.calls == []
    assert store.gather(parts) == [answer(i) for i in range(10)]


def test_interrupted_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    store, parts = PartStore(tmp_path / "parts"), part_ranges(10, 3)  # parts of 3, 3, 3, 1
    with pytest.raises(RuntimeError, match="interrupted in part 2"):
        run(store, parts, Counter(parts, tag=" first", fail_on=2))
    assert sorted(p.name for p in store.root.iterdir()) == ["part_00000.jsonl", "part_00001.jsonl", SETTINGS_FILE]

    resumed = Counter(parts, tag=" second")
    assert run(store, parts, resumed) == [2, 3] and resumed.calls == [2, 3]
    # The finished parts were kept, not recomputed; the rest comes from the resumed run, all in example order.
    assert store.gather(parts) == [answer(i, " first") for i in range(6)] + [answer(i, " second") for i in range(6, 10)]


def test_untrusted_parts_are_redone_and_good_ones_kept(tmp_path: Path) -> None:
    store, parts = PartStore(tmp_path / "parts"), part_ranges(24, 4)  # six parts of 4
    run(store, parts, Counter(parts, tag=" old"))
    p = store.part_path
    p(0).write_text("".join(read_lines(p(0))[:3]), encoding="utf-8")            # lost its last record
    text = p(1).read_text(encoding="utf-8")
    p(1).write_text(text[: len(text) - 7], encoding="utf-8")                   # cut mid-record: not JSON
    lines = read_lines(p(2))
    p(2).write_text("".join([lines[1], lines[0], *lines[2:]]), encoding="utf-8")  # right records, wrong order
    p(3).write_bytes(b"\xff\xfe" + p(3).read_bytes())                           # not UTF-8
    p(4).write_text(p(4).read_text(encoding="utf-8") + "null\n", encoding="utf-8")  # a stray non-record line
    # part 5 is left intact
    redo = Counter(parts, tag=" new")
    assert run(store, parts, redo) == [0, 1, 2, 3, 4] and redo.calls == [0, 1, 2, 3, 4]
    assert store.gather(parts) == [answer(i, " new") for i in range(20)] + [answer(i, " old") for i in range(20, 24)]


def test_part_of_another_split_is_not_trusted(tmp_path: Path) -> None:
    store = PartStore(tmp_path / "parts")
    store.plan(part_ranges(8, 4), SETTINGS, FIX)
    store.write_part(1, [answer(i) for i in range(4, 8)])
    assert store.read_part(1, range(4, 8)) == [answer(i) for i in range(4, 8)]
    # Same file name, other examples: a part with one more (or one fewer) example, or shifted indices.
    assert store.read_part(1, range(4, 9)) is None
    assert store.read_part(1, range(4, 7)) is None
    assert store.read_part(1, range(5, 9)) is None
    assert store.read_part(0, range(0, 4)) is None  # never written


def test_blank_lines_do_not_make_a_part_untrusted(tmp_path: Path) -> None:
    store = PartStore(tmp_path / "parts")
    store.root.mkdir()
    store.part_path(0).write_text("\n".join(json.dumps(answer(i)) for i in range(3)) + "\n\n", encoding="utf-8")
    assert store.read_part(0, range(3)) == [answer(i) for i in range(3)]


# ------------------------------------------------------------------------------------------------------------------
# Other settings, missing settings


@pytest.mark.parametrize("by_leaf, named", [(True, "generation.max_new_tokens, seed"), (False, "generation, seed")])
def test_other_settings_stop_before_any_work_and_change_nothing(tmp_path: Path, by_leaf: bool, named: str) -> None:
    store, parts = PartStore(tmp_path / "parts", by_leaf=by_leaf), part_ranges(10, 4)
    run(store, parts, Counter(parts))
    before = {p.name: p.read_bytes() for p in store.root.iterdir()}
    other = {**SETTINGS, "seed": 8, "generation": {**SETTINGS["generation"], "max_new_tokens": 9}}
    compute = Counter(parts)
    with pytest.raises(InputError) as e:
        run(store, parts, compute, settings=other)
    msg = str(e.value)
    assert "\n" not in msg and f"({named} differ)" in msg and str(store.root) in msg and msg.endswith(FIX)
    assert compute.calls == []
    assert {p.name: p.read_bytes() for p in store.root.iterdir()} == before


def test_parts_without_settings_are_not_trusted(tmp_path: Path) -> None:
    store, parts = PartStore(tmp_path / "parts"), part_ranges(10, 4)
    run(store, parts, Counter(parts))
    store.settings_path.unlink()
    with pytest.raises(InputError, match=f"holds parts but no {SETTINGS_FILE}.*delete") as e:
        store.plan(parts, SETTINGS, FIX)
    assert "\n" not in str(e.value) and not store.settings_path.exists()


def test_directory_without_parts_is_a_fresh_start(tmp_path: Path) -> None:
    store = PartStore(tmp_path / "parts")
    store.root.mkdir()
    (store.root / "notes.txt").write_text("not a part\n", encoding="utf-8")
    assert store.plan(part_ranges(5, 2), SETTINGS, FIX) == [0, 1, 2]


def test_rank0_decides_turns_input_errors_into_input_errors_and_passes_values() -> None:
    assert rank0_decides(MAIN, lambda: [1, 2]) == [1, 2]

    def missing() -> None:
        raise FileNotFoundError("data/x: no such file")

    with pytest.raises(InputError, match="data/x: no such file"):
        rank0_decides(MAIN, missing)
    with pytest.raises(ZeroDivisionError):  # a bug is not dressed up as bad input
        rank0_decides(MAIN, lambda: 1 / 0)


# ------------------------------------------------------------------------------------------------------------------
# Computing and gathering


def test_gather_follows_part_numbers_not_the_order_parts_were_written(tmp_path: Path) -> None:
    store, parts = PartStore(tmp_path / "parts"), part_ranges(10, 4)
    store.plan(parts, SETTINGS, FIX)
    compute_parts(store, parts, [2, 0, 1], MAIN, Counter(parts), "part")
    assert [r["index"] for r in store.gather(parts)] == list(range(10))


def test_gather_refuses_a_missing_part(tmp_path: Path) -> None:
    store, parts = PartStore(tmp_path / "parts"), part_ranges(10, 4)
    store.plan(parts, SETTINGS, FIX)
    compute_parts(store, parts, [0, 2], MAIN, Counter(parts), "part")
    with pytest.raises(RuntimeError, match="part_00001.jsonl is missing or incomplete"):
        store.gather(parts)


def test_compute_parts_logs_one_line_per_part_and_leaves_no_temp_files(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture) -> None:
    store, parts = PartStore(tmp_path / "parts"), part_ranges(10, 4)
    store.plan(parts, SETTINGS, FIX)
    compute_parts(store, parts, [1, 2], MAIN, Counter(parts), "reflection part",
                  note=lambda recs: f", {len(recs)} records")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("reflection part 1 (1/2): examples 4-7, ") and lines[0].endswith(", 4 records")
    assert lines[1].startswith("reflection part 2 (2/2): examples 8-9, ") and lines[1].endswith(", 2 records")
    assert sorted(p.name for p in store.root.iterdir()) == ["part_00001.jsonl", "part_00002.jsonl", SETTINGS_FILE]


def test_compute_parts_writes_only_on_rank_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    store, parts = PartStore(tmp_path / "parts"), part_ranges(10, 4)
    store.plan(parts, SETTINGS, FIX)
    other_rank = DistEnv(rank=1, world_size=1, local_rank=1, device=torch.device("cpu"))
    compute = Counter(parts)
    compute_parts(store, parts, [0, 1, 2], other_rank, compute, "part")
    assert compute.calls == [0, 1, 2]  # every rank computes (the compute may use collectives) ...
    assert not any(store.root.glob("part_*")) and capsys.readouterr().out == ""  # ... but only rank 0 writes


def test_fingerprints_follow_contents_not_paths(tmp_path: Path) -> None:
    """A resumed run is matched by what its inputs hold: a copied model or split has the same digest wherever it
    lies, changed weights, tokenizer or records another, and training state (RNG, optimizer) does not count."""
    from distill.parts import model_digest, split_digest

    model = tmp_path / "ckpt"
    model.mkdir()
    files = {"config.json": "{}", "model.safetensors": "weights", "tokenizer.json": "tok", "rng_state_0.pt": "rng"}
    for name, text in files.items():
        (model / name).write_text(text)
    (model / "ds_state").mkdir()
    (model / "ds_state" / "optim.pt").write_text("optimizer")
    digest = model_digest(model)
    moved = tmp_path / "elsewhere" / "best"
    moved.parent.mkdir()
    model.rename(moved)
    assert model_digest(moved) == digest and model_digest(None) is None
    (moved / "rng_state_0.pt").write_text("other rng")
    (moved / "ds_state" / "optim.pt").write_text("other optimizer")
    assert model_digest(moved) == digest
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        (moved / name).write_text("changed")
        assert model_digest(moved) != digest, name
        (moved / name).write_text(files[name])
    with pytest.raises(InputError, match="no model files"):
        model_digest(tmp_path)

    data = tmp_path / "data"
    data.mkdir()
    for name in ("train_0.bin", "train_0.idx", "train.jsonl", "valid_0.bin"):
        (data / name).write_text(name)
    before = split_digest(data, "train")
    (data / "valid_0.bin").write_text("other valid")
    assert split_digest(data, "train") == before  # another split
    (data / "train.jsonl").write_text("other references")
    assert split_digest(data, "train") != before


def test_compute_parts_prints_progress_lines_also_inside_a_part(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """``within(done, total)`` from the compute moves the examples count while a part is still running."""
    import time

    store, parts = PartStore(tmp_path / "parts"), part_ranges(10, 5)
    store.plan(parts, SETTINGS, FIX)
    counter = Counter(parts)

    def slow(k: int, within: Any) -> list[dict[str, Any]]:
        for done in range(1, 4):
            time.sleep(0.25)
            within(done, 3)
        return counter(k)

    compute_parts(store, parts, [0, 1], MAIN, slow, "part", progress_interval=0.2)
    lines = [line for line in capsys.readouterr().out.splitlines() if "parts: examples" in line]
    assert lines, "no progress line"
    done = [int(line.split("parts: examples ")[1].split("/")[0]) for line in lines]
    assert all(line.split("] ", 1)[1].startswith("parts: examples") for line in lines)
    assert done == sorted(done) and any(0 < d < 5 or 5 < d < 10 for d in done)  # mid-part counts
    assert all(line.rstrip().endswith(")") for line in lines if 0 < int(line.split("examples ")[1].split("/")[0]) < 10)
