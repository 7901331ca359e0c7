"""Garbage collection of the state directory (SPEC §17): expired kept work, stale clones, orphan
worktrees. Run periodically by the engine and as ``mosaic-orchestrator gc``.

- Kept refs (``refs/mosaic/kept/<agentId>``) older than ``MOSAIC_KEEP_DAYS`` are deleted.
- A worktree no live agent owns is removed, its work kept first (``core.git.kept``). The engine
  knows which agents are live; the ``gc`` command, which may run beside an engine, leaves
  worktrees to the engine (start-up reconciliation and its periodic pass).
- A clone with no worktree and no kept ref, not fetched for ``MOSAIC_KEEP_DAYS``, is removed.
- An agent I/O directory (``core/run/iodir.py``: its sockets, a claude-code HOME) that no live
  agent owns and that has not changed for a day is removed (a crash left it; the I/O root is
  shared by the instances of a host, hence the day: another instance's live agent is younger).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from core.git.kept import KEPT_PREFIX, expire_kept, keep_orphan
from core.git.locks import repo_lock
from core.git.runner import run_git
from core.git.worktrees import OrphanHook, prune_worktrees
from core.paths import StatePaths

log = logging.getLogger(__name__)

DAY_S = 86_400.0


@dataclass
class GcReport:
    expired_kept: list[str] = field(default_factory=list)
    removed_worktrees: list[Path] = field(default_factory=list)
    removed_clones: list[Path] = field(default_factory=list)
    removed_io: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"gc: {len(self.expired_kept)} kept ref(s) expired, "
            f"{len(self.removed_worktrees)} orphan worktree(s), "
            f"{len(self.removed_clones)} stale clone(s) and "
            f"{len(self.removed_io)} orphan agent I/O dir(s) removed"
        )


def keep_orphans(paths: StatePaths, author: tuple[str, str]) -> OrphanHook:
    """A ``prune_worktrees`` hook keeping the work of an agent's orphaned worktree."""

    async def keep(cache: Path, path: Path, admin: Path) -> None:
        if path.parent.resolve() != paths.worktrees.resolve():
            return  # not one of ours (named by agent id)
        sha = await keep_orphan(
            cache, path, admin, path.name, author_name=author[0], author_email=author[1]
        )
        if sha is not None:
            log.info("kept an orphan worktree's work", extra={"agent_id": path.name})

    return keep


def _clones(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "HEAD").is_file())


def _last_used(cache: Path) -> float:
    stamps = []
    for name in ("FETCH_HEAD", "HEAD", "packed-refs"):
        try:
            stamps.append(os.stat(cache / name).st_mtime)
        except OSError:
            continue
    return max(stamps, default=0.0)


async def _stale(cache: Path, cutoff: float) -> bool:
    if await asyncio.to_thread(_last_used, cache) >= cutoff:
        return False
    trees = await run_git("worktree", "list", "--porcelain", git_dir=cache)
    if trees.returncode != 0 or trees.stdout.count("worktree ") > 1:
        return False  # the bare clone itself is listed once
    kept = await run_git("for-each-ref", "--count=1", KEPT_PREFIX, git_dir=cache)
    return kept.returncode == 0 and not kept.stdout.strip()


async def collect_garbage(
    paths: StatePaths,
    *,
    keep_days: float,
    live: set[str] | None,
    author: tuple[str, str],
    now: float | None = None,
    io_root: Path | None = None,
) -> GcReport:
    """One gc pass. ``live``: the agents whose worktrees must stay (None: leave worktrees)."""
    report = GcReport()
    now = time.time() if now is None else now
    max_age = keep_days * DAY_S
    for cache in await asyncio.to_thread(_clones, paths.repos):
        async with repo_lock(cache):
            report.expired_kept += await expire_kept(cache, max_age, now=now)
    if live is not None:
        keep = {paths.worktree(agent_id) for agent_id in live}
        report.removed_worktrees = await prune_worktrees(
            paths.repos, keep, before_remove=keep_orphans(paths, author)
        )
    for cache in await asyncio.to_thread(_clones, paths.repos):
        async with repo_lock(cache):
            if await _stale(cache, now - max_age):
                await asyncio.to_thread(shutil.rmtree, cache, True)
                report.removed_clones.append(cache)
    if live is not None and io_root is not None:
        report.removed_io = await asyncio.to_thread(_prune_io, io_root, live, now - IO_GRACE_S)
    if (
        report.expired_kept
        or report.removed_worktrees
        or report.removed_clones
        or report.removed_io
    ):
        log.info(report.summary())
    return report


IO_GRACE_S = DAY_S


def _prune_io(root: Path, live: set[str], cutoff: float) -> list[Path]:
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        agent_id = entry.name.split(".", 1)[0]
        if agent_id in live:
            continue
        try:
            if entry.is_symlink() or entry.stat(follow_symlinks=False).st_mtime >= cutoff:
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed
