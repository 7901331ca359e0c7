"""Make the orchestrator a child subreaper and reap orphaned zombies nobody waits for.

With ``PR_SET_CHILD_SUBREAPER`` a process that double-forks out of a ``none`` sandbox is re-parented
to the orchestrator instead of init, so it can be found and, once it exits, reaped.

Reaping must not steal exit statuses that someone else waits for: asyncio's child watcher (a thread
blocked in ``waitpid(pid)`` or a pidfd) and ``subprocess`` wait for *specific* pids. So the
:class:`OrphanReaper` only reaps a zombie child that it has seen as a zombie in ``grace_scans``
consecutive scans ``interval_s`` apart (default: 2 scans, 5 s): children started through asyncio
or ``subprocess.run`` are reaped by their owner within milliseconds of exiting, while re-parented
orphans have no owner and stay zombies. Code that keeps a ``subprocess.Popen`` of an exited child
unwaited for longer than that window must not be combined with the reaper.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os

import psutil

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def enable_subreaper() -> bool:
    """Mark this process a child subreaper (Linux); False (logged) where that is not possible."""
    try:
        rc = _libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError) as exc:  # pragma: no cover - non-Linux libc
        log.warning("cannot become a child subreaper", extra={"error": str(exc)})
        return False
    if rc != 0:  # pragma: no cover - prctl never refuses this on Linux >= 3.4
        log.warning("cannot become a child subreaper", extra={"errno": ctypes.get_errno()})
        return False
    return True


def is_subreaper() -> bool:
    value = ctypes.c_int(0)
    _libc().prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(value), 0, 0, 0)
    return value.value == 1


def zombie_children() -> list[int]:
    """Pids of this process's children that are zombies (a /proc scan: call it off the loop)."""
    out = []
    try:
        children = psutil.Process().children()
    except psutil.Error:  # pragma: no cover - our own process
        return []
    for child in children:
        with contextlib.suppress(psutil.Error):
            if child.status() == psutil.STATUS_ZOMBIE:
                out.append(child.pid)
    return out


class OrphanReaper:
    """Reaps zombie children that stayed zombies for ``grace_scans`` consecutive scans."""

    def __init__(self, interval_s: float = 5.0, grace_scans: int = 2) -> None:
        if interval_s <= 0 or grace_scans < 1:
            raise ValueError("interval_s must be > 0 and grace_scans >= 1")
        self.interval_s = interval_s
        self.grace_scans = grace_scans
        self._seen: dict[int, int] = {}
        self.reaped: list[int] = []

    def scan(self) -> list[int]:
        """One scan; the pids reaped by it. Blocking (reads /proc): run it in a thread."""
        zombies = set(zombie_children())
        self._seen = {pid: self._seen.get(pid, 0) + 1 for pid in zombies}
        done = []
        for pid, count in list(self._seen.items()):
            if count < self.grace_scans:
                continue
            with contextlib.suppress(ChildProcessError):
                got, status = os.waitpid(pid, os.WNOHANG)
                if got == pid:
                    done.append(pid)
                    log.info(
                        "reaped orphan process",
                        extra={"pid": pid, "exit_status": os.waitstatus_to_exitcode(status)},
                    )
            self._seen.pop(pid, None)
        self.reaped += done
        return done

    async def run(self) -> None:
        """Scan forever (until cancelled); start it in the engine's TaskGroup."""
        while True:
            await asyncio.to_thread(self.scan)
            await asyncio.sleep(self.interval_s)
