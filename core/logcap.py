"""Capping an agent's log files in place, keeping their tail (SPEC §16, ``AGENT_LOG_MB``).

A sandboxed process writes its ``stdout.log`` / ``stderr.log`` itself, through a descriptor
opened with ``O_APPEND``. Every write through such a descriptor lands at the file's current end,
so the orchestrator may shorten the file under it: :func:`cap_log` moves the last part of an
oversized log to its beginning (behind one marker line saying how much was dropped) and truncates
the rest. Output written in the instant between the last move and the truncation may be lost;
nothing else is. The work is done in chunks: memory does not depend on the log's size.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.safeio import CHUNK, MiB

_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_ALIGN_WINDOW = 64 * 1024
_ROUNDS = 4
LOGS = ("stdout.log", "stderr.log")


def marker(dropped: int) -> bytes:
    return f"[mosaic: {dropped} bytes of earlier output dropped (log cap)]\n".encode()


def cap_log(path: Path, max_bytes: int, keep_bytes: int | None = None) -> int:
    """Shorten ``path`` to its last ``keep_bytes`` (default: half the cap) once it is over
    ``max_bytes``; the number of bytes dropped (0: nothing to do, or not a regular file).

    Blocking: call it through ``asyncio.to_thread``. The kept part starts at a line boundary
    when one is near.
    """
    keep = max_bytes // 2 if keep_bytes is None else min(keep_bytes, max_bytes)
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return 0  # missing, or a symbolic link: nothing of ours to shorten
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= max_bytes:
            return 0
        start = _line_start(fd, st.st_size - keep)
        head = marker(start)
        if len(head) > start:  # a cap too small to hold the marker: keep only the tail
            head = b""
        dst = len(head)
        src = start
        end = st.st_size
        for _ in range(_ROUNDS):  # a writer may append while we move: move that too
            while src < end:
                chunk = os.pread(fd, min(CHUNK, end - src), src)
                if not chunk:
                    break
                _pwrite_all(fd, chunk, dst)
                src += len(chunk)
                dst += len(chunk)
            end = os.fstat(fd).st_size
            if src >= end:
                break
        os.ftruncate(fd, dst)
        if head:
            _pwrite_all(fd, head, 0)
        return start
    finally:
        os.close(fd)


def _line_start(fd: int, offset: int) -> int:
    """``offset``, moved just past the next newline when there is one close after it."""
    window = os.pread(fd, _ALIGN_WINDOW, offset)
    at = window.find(b"\n")
    return offset + at + 1 if 0 <= at < len(window) - 1 else offset


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def cap_logs(log_dir: Path, cap_mb: int) -> int:
    """Cap each log of a sandbox (``stdout.log``, ``stderr.log`` in ``log_dir``) at ``cap_mb``
    MiB, keeping its last half; the bytes dropped. Blocking: call it in a thread."""
    return sum(cap_log(log_dir / name, cap_mb * MiB) for name in LOGS)
