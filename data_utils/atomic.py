"""Atomic outputs: a reader (or a rerun after a crash) sees the old file or directory or the complete new one, never
half of one.

* files (:func:`write_text_atomic` and its JSON / JSONL forms): written to a temp file in the same directory, then
  ``os.replace``'d over the target;
* directories (:func:`build_dir`): filled in a temp directory next to the target, then renamed into place, replacing
  an earlier one (which is put back if the swap fails); on any error the temp directory, and the parent directories
  made for it, are removed again.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------
def write_text_atomic(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temp file in the same directory (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open() (not mkstemp, whose files are 0600) so the result gets the usual umask permissions.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# Characters str.splitlines() breaks a line at that json.dumps(ensure_ascii=False) leaves raw (it escapes the
# control characters below U+0020 itself). Escaped, a record is one line for every reader (found by fuzzing).
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def jsonl_line(record: Any) -> str:
    """``record`` as one JSON Lines line (with its newline): UTF-8 text kept readable, line separators escaped."""
    return json.dumps(record, ensure_ascii=False).translate(_LINE_BREAKS) + "\n"


def write_jsonl_atomic(path: Path, records: Sequence[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(jsonl_line(r) for r in records))


# ----------------------------------------------------------------------------------------------------------------
# Directories
# ----------------------------------------------------------------------------------------------------------------
def make_temp_dir(final_dir: Path) -> tuple[Path, list[Path]]:
    """Temp dir next to ``final_dir``; also returns the parent dirs created for it (removed again on failure)."""
    created: list[Path] = []
    for parent in reversed(final_dir.parents):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    tmp = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.", suffix=".tmp"))
    return tmp, created


def discard_temp_dir(tmp: Path, created_parents: list[Path]) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
    for parent in reversed(created_parents):
        try:
            parent.rmdir()
        except OSError:  # not empty: someone else put something there meanwhile
            break


def move_into_place(tmp: Path, final_dir: Path) -> bool:
    """Rename ``tmp`` to ``final_dir``, replacing an existing directory; returns whether one was replaced."""
    tmp.chmod(0o755)  # mkdtemp makes 0700; the output should be as readable as any other directory
    if not final_dir.exists():
        tmp.rename(final_dir)
        return False
    old = Path(tempfile.mkdtemp(dir=final_dir.parent, prefix=f".{final_dir.name}.", suffix=".old"))
    # On failure the emptied holder goes too, so a failed swap leaves no debris; if putting the old directory back
    # fails, the holder (with the old directory inside) is kept.
    try:
        final_dir.rename(old / "previous")
    except BaseException:
        old.rmdir()
        raise
    try:
        tmp.rename(final_dir)
    except BaseException:
        (old / "previous").rename(final_dir)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
    return True


def build_dir(final_dir: Path, fill: Callable[[Path], T]) -> tuple[T, bool]:
    """Runs ``fill(tmp)``, which writes the directory's contents into the temp directory ``tmp``, then moves it to
    ``final_dir``. Returns ``fill``'s result and whether an existing ``final_dir`` was replaced.

    On any error (in ``fill`` or the move) the temp directory and the parents made for it are removed and the error
    re-raised, so ``final_dir`` is either the complete new directory or untouched.
    """
    tmp, created = make_temp_dir(final_dir)
    try:
        result = fill(tmp)
        replaced = move_into_place(tmp, final_dir)
    except BaseException:
        discard_temp_dir(tmp, created)
        raise
    return result, replaced
