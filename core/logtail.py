"""Reading the tail of an agent's log files without loading them whole."""

from __future__ import annotations

import os
from pathlib import Path


def tail_lines(path: Path, count: int = 20, *, max_bytes: int = 64 * 1024) -> list[str]:
    """The last ``count`` non-empty lines of ``path`` ([] if missing)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = [ln.strip() for ln in data.decode("utf-8", "replace").splitlines()]
    return [ln for ln in lines if ln][-count:]


def last_line(path: Path) -> str | None:
    lines = tail_lines(path, 1)
    return lines[0][:500] if lines else None
