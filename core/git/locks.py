"""Per-repository exclusive lock shared by tasks of one process and by separate processes.

A cached clone at ``<root>/<name>.git`` is guarded by ``<root>/<name>.git.lock`` (``fcntl.flock``).
The lock is taken without blocking (``LOCK_NB`` polled with a short async sleep), so waiting never
occupies a thread of the default executor nor blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

from core.git.errors import GitError

DEFAULT_TIMEOUT = 900.0


def lock_path(cache: Path) -> Path:
    """The lock file guarding the cached clone at ``cache``."""
    return cache.with_name(cache.name + ".lock")


@contextlib.asynccontextmanager
async def repo_lock(cache: Path, *, timeout: float = DEFAULT_TIMEOUT) -> AsyncIterator[None]:
    """Hold the exclusive lock of the cached clone ``cache`` for the body of the block."""
    path = lock_path(cache)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise GitError(f"cannot open lock file {path}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise GitError(
                        f"timed out after {timeout:.0f}s waiting for the lock of {cache}"
                    ) from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
