"""Atomic outputs (data_utils/atomic.py): a file or directory is the old one or the complete new one, never half of
one, and a failed write leaves no temp files or directories behind."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any, Callable

import pytest

from data_utils import atomic
from data_utils.atomic import build_dir, move_into_place, write_json_atomic, write_jsonl_atomic, write_text_atomic

OLD_TEXT = "old content\n"


def listing(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones included) -> file bytes, or None for a directory."""
    return {str(p.relative_to(root)): (None if p.is_dir() else p.read_bytes()) for p in sorted(root.rglob("*"))}


class Boom(Exception):
    pass


def fail_rename(monkeypatch: pytest.MonkeyPatch, final: Path, step: str, exc: BaseException) -> None:
    """Makes one step of the swap in :func:`move_into_place` raise ``exc``: moving the old ``final`` aside
    (``step="aside"``) or renaming the new temp directory onto ``final`` (``step="into"``). Other renames work."""
    real_rename = Path.rename

    def rename(self: Path, dest: Any) -> Path:
        if (step == "aside" and self == final) or (step == "into" and Path(dest) == final
                                                   and self.name.endswith(".tmp")):
            raise exc
        return real_rename(self, dest)

    monkeypatch.setattr(Path, "rename", rename)


# ------------------------------------------------------------------------------------------------------------------
# Files


def test_write_text_creates_parents_and_leaves_only_the_target(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.txt"
    write_text_atomic(target, "héllo\r\nwörld\n")
    assert target.read_bytes() == "héllo\r\nwörld\n".encode("utf-8")  # no newline translation
    assert listing(tmp_path) == {"a": None, "a/b": None, "a/b/out.txt": "héllo\r\nwörld\n".encode("utf-8")}
    write_text_atomic(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_written_file_has_umask_permissions_not_private_ones(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_text_atomic(tmp_path / "out.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out.txt").stat().st_mode) == 0o644


def test_json_and_jsonl_forms_round_trip(tmp_path: Path) -> None:
    obj = {"name": "Chloé", "n": [1, 2.5, None], "nested": {"ok": True}}
    write_json_atomic(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text(encoding="utf-8")) == obj
    assert "Chloé" in (tmp_path / "x.json").read_text(encoding="utf-8")  # not \u-escaped
    records = [{"index": i, "text": f"line {i}\nwith a newline"} for i in range(3)]
    write_jsonl_atomic(tmp_path / "x.jsonl", records)
    lines = (tmp_path / "x.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == records
    write_jsonl_atomic(tmp_path / "empty.jsonl", [])
    assert (tmp_path / "empty.jsonl").read_text(encoding="utf-8") == ""


@pytest.mark.parametrize("write", [
    # Fails while encoding (a lone surrogate is not UTF-8), after the temp file was opened.
    lambda p: write_text_atomic(p, "new " * 50_000 + "\ud800"),
    # Fails half-way through serialising the records.
    lambda p: write_jsonl_atomic(p, [{"index": 0}, {"index": 1, "bad": object()}]),
    lambda p: write_json_atomic(p, {"bad": {1, 2}}),
], ids=["encode", "jsonl", "json"])
def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, write: Callable[[Path], None]) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text(OLD_TEXT, encoding="utf-8")
    with pytest.raises((UnicodeEncodeError, TypeError)):
        write(target)
    assert listing(tmp_path) == {"out.jsonl": OLD_TEXT.encode()}


@pytest.mark.parametrize("exc", [OSError("disk full"), KeyboardInterrupt()], ids=["oserror", "interrupt"])
def test_failed_replace_keeps_the_old_file_and_removes_the_complete_temp(tmp_path: Path, exc: BaseException,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.txt"
    target.write_text(OLD_TEXT, encoding="utf-8")
    seen: list[tuple[Path, str]] = []

    def replace(src: Any, dst: Any) -> None:
        seen.append((Path(src), Path(src).read_text(encoding="utf-8")))
        raise exc

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(type(exc)):
        write_text_atomic(target, "new content\n")
    monkeypatch.undo()
    # The new text was complete in a temp file next to the target (so the rename cannot cross file systems) ...
    [(tmp, text)] = seen
    assert tmp.parent == tmp_path and tmp != target and text == "new content\n"
    # ... and with the swap failed, only the old file is left.
    assert listing(tmp_path) == {"out.txt": OLD_TEXT.encode()}


def test_writing_onto_a_directory_fails_without_leftovers(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text(OLD_TEXT, encoding="utf-8")
    with pytest.raises(OSError):
        write_text_atomic(tmp_path / "out", "x")
    assert listing(tmp_path) == {"out": None, "out/keep.txt": OLD_TEXT.encode()}


# ------------------------------------------------------------------------------------------------------------------
# Directories


def fill_with(files: dict[str, str], result: Any = "done") -> Callable[[Path], Any]:
    def fill(tmp: Path) -> Any:
        assert tmp.is_dir() and not any(tmp.iterdir())
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text, encoding="utf-8")
        return result

    return fill


def make_old_dir(final: Path) -> dict[str, bytes | None]:
    (final / "sub").mkdir(parents=True)
    (final / "a.txt").write_text(OLD_TEXT, encoding="utf-8")
    (final / "sub" / "stale.bin").write_bytes(b"\x00\x01")
    return listing(final)


def test_build_dir_creates_a_new_directory_with_parents(tmp_path: Path) -> None:
    final = tmp_path / "x" / "y" / "out"
    result, replaced = build_dir(final, fill_with({"a.txt": "A", "sub/b.txt": "B"}, result={"n": 2}))
    assert (result, replaced) == ({"n": 2}, False)
    assert listing(tmp_path) == {"x": None, "x/y": None, "x/y/out": None, "x/y/out/a.txt": b"A",
                                 "x/y/out/sub": None, "x/y/out/sub/b.txt": b"B"}
    # mkdtemp makes 0700 directories; the output is as readable as any other.
    assert stat.S_IMODE(final.stat().st_mode) == 0o755


def test_build_dir_replaces_an_old_directory_entirely(tmp_path: Path) -> None:
    final = tmp_path / "out"
    make_old_dir(final)
    result, replaced = build_dir(final, fill_with({"a.txt": "new A"}))
    assert (result, replaced) == ("done", True)
    assert listing(tmp_path) == {"out": None, "out/a.txt": b"new A"}  # no stale file, no temp or .old left


@pytest.mark.parametrize("exc", [Boom("fill failed"), KeyboardInterrupt()], ids=["error", "interrupt"])
def test_failed_fill_keeps_the_old_directory_and_leaves_no_temp(tmp_path: Path, exc: BaseException) -> None:
    final = tmp_path / "out"
    old = make_old_dir(final)

    def fill(tmp: Path) -> None:
        fill_with({"a.txt": "half", "sub/new.txt": "half"})(tmp)
        raise exc

    with pytest.raises(type(exc)):
        build_dir(final, fill)
    assert listing(final) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failed_fill_removes_the_parents_it_made_but_not_older_ones(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    with pytest.raises(Boom):
        build_dir(tmp_path / "keep" / "new1" / "new2" / "out", lambda tmp: (_ for _ in ()).throw(Boom()))
    assert listing(tmp_path) == {"keep": None}


def test_failed_fill_keeps_a_made_parent_that_got_other_contents(tmp_path: Path) -> None:
    final = tmp_path / "new" / "out"

    def fill(tmp: Path) -> None:
        (tmp_path / "new" / "other.txt").write_text("someone else's\n", encoding="utf-8")
        raise Boom()

    with pytest.raises(Boom):
        build_dir(final, fill)
    assert listing(tmp_path) == {"new": None, "new/other.txt": b"someone else's\n"}


@pytest.mark.parametrize("step", ["aside", "into"])
@pytest.mark.parametrize("exc", [OSError("rename failed"), KeyboardInterrupt()], ids=["oserror", "interrupt"])
def test_failed_swap_keeps_or_restores_the_old_directory_and_leaves_no_temp(
        tmp_path: Path, exc: BaseException, step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "out"
    old = make_old_dir(final)
    fail_rename(monkeypatch, final, step, exc)
    with pytest.raises(type(exc)):
        build_dir(final, fill_with({"a.txt": "new A"}))
    monkeypatch.undo()
    assert listing(final) == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # neither the new temp nor an .old holder


def test_failed_put_back_keeps_the_old_directory_in_its_holder(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    final = tmp_path / "out"
    old = make_old_dir(final)
    real_rename = Path.rename

    def rename(self: Path, dest: Any) -> Path:
        if Path(dest) == final:  # neither the new directory nor the old one can be moved to ``final``
            raise OSError("rename failed")
        return real_rename(self, dest)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        build_dir(final, fill_with({"a.txt": "new A"}))
    monkeypatch.undo()
    # The old contents are not lost: they wait in the holder, for a person to move back.
    [holder] = [p for p in tmp_path.iterdir() if p.name.endswith(".old")]
    assert sorted(p.name for p in tmp_path.iterdir()) == [holder.name]
    assert listing(holder / "previous") == old


def test_move_into_place_reports_whether_it_replaced(tmp_path: Path) -> None:
    final = tmp_path / "out"
    first = tmp_path / ".first.tmp"
    (first / "a.txt").parent.mkdir()
    (first / "a.txt").write_text("1", encoding="utf-8")
    assert move_into_place(first, final) is False
    second = tmp_path / ".second.tmp"
    second.mkdir()
    (second / "b.txt").write_text("2", encoding="utf-8")
    assert move_into_place(second, final) is True
    assert listing(tmp_path) == {"out": None, "out/b.txt": b"2"}
