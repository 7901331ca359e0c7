"""Measuring what an agent stores on the host: its disk budget (SPEC §16, ``SANDBOX_DISK_MB``).

An agent's budget covers the growth of its worktree since it started, everything in its private
writable directories (the runtime's I/O directory), and its sandbox's ``/tmp`` (a tmpfs in the
sandbox's own mount namespace, read from the host through ``/proc/<pid>/root/tmp``).

The worktree is the agent's, so the walk trusts nothing in it: every directory is opened relative
to its parent's descriptor with ``O_NOFOLLOW`` and checked to be the directory that was listed
(a directory swapped for a symbolic link mid-walk is skipped, never followed); entries are
``lstat``-ed; nothing on another file system is entered. A file is charged the larger of its size
and its allocated blocks (a sparse file of terabytes is charged terabytes: the commit would read
that much), every hard link in full. Memory does not depend on the tree: the walk holds one
directory iterator per level, at most ``MAX_DEPTH`` levels. A directory it cannot enter (deeper
than that, or unreadable to us) is counted and reported (``unmeasured``) so the caller can fail
closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.safeio import MiB

MAX_DEPTH = 64
"""Directory levels held open by one walk (two descriptors each)."""

_DIR_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC
_WALKS = threading.BoundedSemaphore(2)
"""Walks running at once, over all agents (each may hold ``2 * MAX_DEPTH`` descriptors)."""


@dataclass(frozen=True)
class TreeUsage:
    bytes: int = 0
    entries: int = 0
    unmeasured: int = 0
    """Directories counted but not entered: deeper than ``MAX_DEPTH`` levels, or unreadable."""
    stopped: bool = False
    """The walk stopped early, past ``stop_above`` bytes."""


def charge(st: os.stat_result) -> int:
    """What one entry costs: its size or its allocated blocks, whichever is larger."""
    return max(st.st_size, st.st_blocks * 512)


def tree_usage(
    root: Path, *, stop_above: int | None = None, max_depth: int = MAX_DEPTH
) -> TreeUsage:
    """Bytes stored under ``root`` (not counting ``root`` itself). Blocking: use a thread.

    A missing ``root`` measures 0. With ``stop_above``, the walk ends as soon as the total
    passes it (``stopped``).
    """
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return TreeUsage()
    total = entries = unmeasured = 0
    stack: list[tuple[int, Iterator[os.DirEntry[str]]]] = []
    try:
        device = os.fstat(top).st_dev
        stack.append((top, os.scandir(top)))
    except OSError:
        os.close(top)
        return TreeUsage()
    try:
        while stack:
            fd, listing = stack[-1]
            try:
                entry = next(listing, None)
            except OSError:
                entry = None
            if entry is None:
                _close(stack.pop())
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += charge(st)
            entries += 1
            if stop_above is not None and total > stop_above:
                return TreeUsage(total, entries, unmeasured, stopped=True)
            if not stat.S_ISDIR(st.st_mode) or st.st_dev != device:
                continue
            if len(stack) >= max_depth:
                unmeasured += 1
                continue
            try:
                child = _open_dir(fd, entry.name, st)
            except PermissionError:
                unmeasured += 1
                continue
            if child is not None:
                stack.append(child)
    finally:
        for level in stack:
            _close(level)
    return TreeUsage(total, entries, unmeasured)


def _open_dir(
    parent: int, name: str, listed: os.stat_result
) -> tuple[int, Iterator[os.DirEntry[str]]] | None:
    """The directory ``name`` as it was listed; None if it is gone or was swapped (for a link:
    ``O_NOFOLLOW``). Raises ``PermissionError`` when we may not enter it."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        raise
    except OSError:
        return None
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (listed.st_dev, listed.st_ino):
            raise OSError("replaced while walking")
        return fd, os.scandir(fd)
    except PermissionError:
        os.close(fd)
        raise
    except OSError:
        os.close(fd)
        return None


def _close(level: tuple[int, Iterator[os.DirEntry[str]]]) -> None:
    fd, listing = level
    close = getattr(listing, "close", None)
    if close is not None:
        close()
    os.close(fd)


# -- the sandbox's /tmp ---------------------------------------------------------------------------


def _mounts(pid: int | str) -> list[tuple[int, str, bytes]]:
    """(device, mount point, file system type) of every mount ``pid`` sees; [] on error."""
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as fh:
            table = fh.read(4 * MiB)
    except OSError:
        return []
    mounts = []
    for line in table.splitlines():
        fields = line.split(b" ")
        try:
            sep = fields.index(b"-", 6)
            major, minor = fields[2].split(b":")
            point = _unescape(fields[4])
            mounts.append((os.makedev(int(major), int(minor)), point, fields[sep + 1]))
        except (ValueError, IndexError):
            continue
    return mounts


def _unescape(raw: bytes) -> str:
    """A mountinfo path: the kernel writes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), raw).decode(
        "utf-8", "surrogateescape"
    )


def _used(pid: int | str, mountpoint: str, device: int) -> int:
    path = f"/proc/{pid}/root{mountpoint.rstrip('/')}/"
    try:
        if os.stat(path).st_dev != device:  # covered by another mount
            return 0
        vfs = os.statvfs(path)
    except OSError:
        return 0
    return max(0, (vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize)


def tmpfs_used(pid: int | str, mountpoint: str = "/tmp") -> int:
    """Bytes used on the tmpfs mounted at ``mountpoint`` as process ``pid`` sees it.

    0 when no tmpfs is mounted there (e.g. the host's own disk) or on any error.
    """
    here = [(dev, fstype) for dev, point, fstype in _mounts(pid) if point == mountpoint]
    if not here or here[-1][1] != b"tmpfs":  # the last mount at a point is the visible one
        return 0
    return _used(pid, mountpoint, here[-1][0])


def private_tmpfs_used(pids: Iterable[int | str]) -> int:
    """Bytes used on the tmpfs file systems the processes ``pids`` see and we do not: those
    their sandbox mounted for itself (``/tmp``, a private home...). A host tmpfs bound into a
    sandbox is not counted (it is ours too); each file system counts once."""
    ours = {dev for dev, _point, _fs in _mounts("self")}
    if not ours:
        return 0
    total = 0
    counted: set[int] = set()
    for pid in pids:
        for dev, point, fstype in _mounts(pid):
            if fstype == b"tmpfs" and dev not in ours and dev not in counted:
                counted.add(dev)
                total += _used(pid, point, dev)
    return total


def _mount_ns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", "rb") as fh:
            return [int(p) for p in fh.read(64 * 1024).split() if p.isdigit()]
    except OSError:
        return []


def sandbox_namespaces(pid: int, *, depth: int = 6, limit: int = 64) -> list[int]:
    """One process for each mount namespace other than ours among ``pid`` and its descendants
    (a sandbox may nest several, e.g. a launcher's and the agent's); [] when there is none."""
    own = _mount_ns("self")
    found: dict[int, int] = {}
    level = [pid]
    seen = 0
    for _ in range(depth + 1):
        following: list[int] = []
        for candidate in level:
            ns = _mount_ns(candidate)
            if ns is not None and ns != own:
                found.setdefault(ns, candidate)
            seen += 1
            if seen >= limit:
                return list(found.values())
            following.extend(_children(candidate))
        level = following
    return list(found.values())


# -- the budget -----------------------------------------------------------------------------------


class DiskBudget:
    """One agent's disk budget, checked by its monitor.

    ``baseline`` is the worktree's usage before the agent started; ``private_dirs`` (its
    writable I/O directories) are charged in full. The worktree is re-walked in a thread at most
    every ``min_interval`` seconds, and never more often than five times as long as the last
    walk took (a large tree is walked less often); the ``/tmp`` figure is fresh at every check.
    """

    def __init__(
        self,
        budget_mb: int,
        worktree: Path,
        baseline: TreeUsage,
        *,
        private_dirs: Sequence[Path] = (),
        min_interval: float = 2.0,
    ) -> None:
        self.budget_mb = budget_mb
        self.limit = budget_mb * MiB
        self.worktree = worktree
        self.baseline = baseline
        self.private_dirs = tuple(private_dirs)
        self.min_interval = min_interval
        self.stored = 0
        self.unmeasured = 0
        self._walk: asyncio.Future[tuple[int, int] | None] | None = None
        self._next_walk = 0.0
        self._namespaces: list[int] = []

    def measure_files(self) -> tuple[int, int]:
        """Blocking: (bytes charged for the worktree's growth and private dirs, directories
        that could not be entered and were not there at the start)."""
        wt = tree_usage(self.worktree, stop_above=self.baseline.bytes + self.limit)
        total = max(0, wt.bytes - self.baseline.bytes)
        unmeasured = max(0, wt.unmeasured - self.baseline.unmeasured)
        for path in self.private_dirs:
            if total > self.limit:
                break
            usage = tree_usage(path, stop_above=self.limit - total)
            total += usage.bytes
            unmeasured += usage.unmeasured
        return total, unmeasured

    def tmp_used(self, pid: int | None) -> int:
        """Blocking: bytes in the sandbox's own tmpfs mounts (its ``/tmp``, a private home);
        0 when it has none (e.g. the ``none`` backend) or on any error."""
        if pid is None:
            return 0
        if not self._namespaces or any(_mount_ns(p) is None for p in self._namespaces):
            self._namespaces = sandbox_namespaces(pid)
        return private_tmpfs_used(self._namespaces)

    async def refresh(self) -> None:
        """Measure the files now and wait for the figures (``poll`` does it in the background)."""
        self.stored, self.unmeasured = await asyncio.to_thread(self.measure_files)

    def poll(self) -> None:
        """Collect a finished walk; start the next one when it is due (never waits)."""
        if self._walk is not None and self._walk.done():
            walk, self._walk = self._walk, None
            with contextlib.suppress(Exception):
                measured = walk.result()
                if measured is not None:
                    self.stored, self.unmeasured = measured
        if self._walk is None and time.monotonic() >= self._next_walk:
            self._walk = asyncio.ensure_future(asyncio.to_thread(self._timed_walk))

    def _timed_walk(self) -> tuple[int, int] | None:
        if not _WALKS.acquire(blocking=False):
            return None  # other agents' walks are running: try again at the next check
        started = time.monotonic()
        try:
            return self.measure_files()
        finally:
            _WALKS.release()
            took = time.monotonic() - started
            self._next_walk = time.monotonic() + max(self.min_interval, 5 * took)

    def verdict(self, tmp_bytes: int) -> str | None:
        """The failure, when the budget is exceeded (or the worktree cannot be measured)."""
        used = self.stored + tmp_bytes
        if used > self.limit:
            used_mb = -(-used // MiB)  # rounded up: never "16 MB used" over a 16 MB budget
            return f"sandbox: disk budget of {self.budget_mb} MB exceeded ({used_mb} MB used)"
        if self.unmeasured:
            return (
                f"sandbox: disk budget of {self.budget_mb} MB exceeded (cannot be measured: "
                f"directories unreadable or nested more than {MAX_DEPTH} levels deep)"
            )
        return None

    def close(self) -> None:
        if self._walk is not None:
            self._walk.cancel()  # the thread finishes its walk on its own
            self._walk = None
