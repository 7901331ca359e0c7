"""Reading the tail of an agent's log files without loading them whole.

The files are read through :mod:`core.safeio`: a log that is a symbolic link, a FIFO or anything
but a regular file reads as empty, and only the last ``max_bytes`` are ever read.
"""

from __future__ import annotations

from pathlib import Path

from core.safeio import RefusedFile, read_tail


def tail_lines(path: Path, count: int = 20, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``count`` non-empty lines of ``path`` ([] if missing or not a regular file)."""
    try:
        data = read_tail(path, max_bytes)
    except (OSError, RefusedFile):
        return []
    if not data:
        return []
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()]
    return [ln for ln in lines if ln][-count:]


def last_line(path: Path) -> str | None:
    lines = tail_lines(path, 1)
    return lines[0][:500] if lines else None
