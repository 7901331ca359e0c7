"""Worktrees: one per agent, on its own branch, created from origin's base branch."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from core.git.credentials import Credentials
from core.git.errors import BaseNotFound, GitError, WorktreeError
from core.git.locks import repo_lock
from core.git.runner import git, run_git, tail
from core.git.validation import validate_branch

log = logging.getLogger(__name__)


@dataclass
class Worktree:
    """An agent's checkout: ``branch`` made from origin's ``base`` at ``base_sha``."""

    path: Path
    branch: str
    base: str
    base_sha: str
    cache: Path
    admin: Path | None = field(default=None, compare=False, repr=False)
    """The worktree's administrative git dir inside the cache (found from the cache, never from
    the worktree's ``.git`` file, which the agent can rewrite)."""
    credentials: Credentials | None = field(default=None, compare=False, repr=False)
    """Origin's credentials for fetching and pushing on this worktree's behalf (memory only)."""


@dataclass(frozen=True)
class _Entry:
    path: Path
    branch: str | None
    bare: bool


def _find_admin(cache: Path, path: Path) -> Path | None:
    target = os.path.realpath(path / ".git")
    root = cache / "worktrees"
    if not root.is_dir():
        return None
    for admin in root.iterdir():
        try:
            recorded = (admin / "gitdir").read_text().strip()
        except OSError:
            continue
        if os.path.realpath(recorded) == target:
            return admin
    return None


def admin_dir(wt: Worktree) -> Path:
    """The worktree's admin dir in the cache; raises :class:`WorktreeError` if it is gone."""
    if wt.admin is None or not (wt.admin / "gitdir").is_file():
        wt.admin = _find_admin(wt.cache, wt.path)
    if wt.admin is None:
        raise WorktreeError(f"{wt.path} is not a registered worktree of {wt.cache}")
    return wt.admin


async def wt_git(wt: Worktree, *args: str, env: dict[str, str] | None = None) -> str:
    """Run git in a worktree with an explicit GIT_DIR/GIT_WORK_TREE."""
    admin = await asyncio.to_thread(admin_dir, wt)
    return await git(*args, cwd=wt.path, git_dir=admin, work_tree=wt.path, env=env)


async def _list(cache: Path) -> list[_Entry]:
    out = await git("worktree", "list", "--porcelain", "-z", git_dir=cache)
    entries: list[_Entry] = []
    for record in out.split("\0\0"):
        fields = [f for f in record.split("\0") if f]
        if not fields or not fields[0].startswith("worktree "):
            continue
        path = Path(fields[0].removeprefix("worktree "))
        branch = next((f.removeprefix("branch ") for f in fields if f.startswith("branch ")), None)
        entries.append(_Entry(path, branch, "bare" in fields))
    return entries


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


async def _remove(cache: Path, path: Path) -> None:
    await run_git("worktree", "remove", "--force", "--force", str(path), git_dir=cache)
    await asyncio.to_thread(_rmtree, path)


def _rmtree(path: Path) -> None:
    if path.is_symlink():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


async def create_worktree(
    cache: Path,
    path: Path,
    *,
    branch: str,
    base: str,
    credentials: Credentials | None = None,
) -> Worktree:
    """Check out a new branch ``branch`` from origin's ``base`` into ``path``.

    A branch or worktree left by a previous attempt is reset/replaced, so retries work.
    ``credentials`` (origin's, from the repository URL) are kept on the :class:`Worktree` for
    the fetch and push made later on its behalf.
    Raises :class:`BaseNotFound` when origin has no branch ``base``.
    """
    validate_branch(branch)
    validate_branch(base)
    path = Path(os.path.abspath(path))  # noqa: ASYNC240 (string operation, no I/O)
    async with repo_lock(cache):
        found = await run_git(
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/remotes/origin/{base}^{{commit}}",
            git_dir=cache,
        )
        if found.returncode != 0:
            raise BaseNotFound(f"base branch {base!r} does not exist in origin")
        base_sha = found.stdout.strip()
        await git("worktree", "prune", git_dir=cache)
        removed = False
        for entry in await _list(cache):
            if entry.bare:
                continue
            if _same(entry.path, path) or entry.branch == f"refs/heads/{branch}":
                log.info("removing leftover worktree", extra={"worktree": str(entry.path)})
                await _remove(cache, entry.path)
                removed = True
        if removed:
            await git("worktree", "prune", git_dir=cache)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise WorktreeError(f"cannot create worktree: {path} exists and is not empty")
        result = await run_git(
            "worktree",
            "add",
            "--quiet",
            "--no-track",
            "-B",
            branch,
            str(path),
            base_sha,
            git_dir=cache,
        )
        if result.returncode != 0:
            raise WorktreeError(
                f"cannot create worktree {path} on {branch}: {tail(result.stderr)}",
                returncode=result.returncode,
            )
        admin = await asyncio.to_thread(_find_admin, cache, path)
    log.info("worktree created", extra={"worktree": str(path), "branch": branch, "base": base})
    return Worktree(
        path=path,
        branch=branch,
        base=base,
        base_sha=base_sha,
        cache=cache,
        admin=admin,
        credentials=credentials,
    )


async def remove_worktree(wt: Worktree, *, delete_branch: bool) -> None:
    """Remove the worktree (and its branch if ``delete_branch``); idempotent."""
    if not (wt.cache / "HEAD").is_file():
        if wt.path.exists():
            await asyncio.to_thread(shutil.rmtree, wt.path, True)
        return
    async with repo_lock(wt.cache):
        await _remove(wt.cache, wt.path)
        await git("worktree", "prune", git_dir=wt.cache)
        if delete_branch:
            ref = f"refs/heads/{wt.branch}"
            in_use = any(e.branch == ref for e in await _list(wt.cache))
            if not in_use:
                await run_git("update-ref", "-d", ref, git_dir=wt.cache)
    log.info("worktree removed", extra={"worktree": str(wt.path), "branch_deleted": delete_branch})


def _realpaths(paths: list[Path]) -> list[str]:
    return [os.path.realpath(p) for p in paths]


def _cached_repos(cache_root: Path) -> list[Path]:
    if not cache_root.is_dir():
        return []
    return sorted(
        p
        for p in cache_root.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / "HEAD").is_file()
    )


OrphanHook = Callable[[Path, Path, Path], Awaitable[None]]
"""Called with (cache, worktree path, its admin dir) before an orphan worktree is removed."""


async def prune_worktrees(
    cache_root: Path, keep: set[Path], *, before_remove: OrphanHook | None = None
) -> list[Path]:
    """Remove every worktree of every cached repository under ``cache_root`` not in ``keep``.

    ``before_remove`` sees each one first (e.g. to keep its work). Returns the paths removed
    (including registrations whose directory had already vanished).
    """
    keep_real = set(await asyncio.to_thread(_realpaths, list(keep)))
    removed: list[Path] = []
    for cache in await asyncio.to_thread(_cached_repos, cache_root):
        async with repo_lock(cache):
            try:
                entries = await _list(cache)
            except GitError as exc:
                log.warning("cannot list worktrees", extra={"cache": str(cache), "error": str(exc)})
                continue
            real = await asyncio.to_thread(_realpaths, [e.path for e in entries])
            for entry, entry_real in zip(entries, real, strict=True):
                if entry.bare or entry_real in keep_real:
                    continue
                admin = await asyncio.to_thread(_find_admin, cache, entry.path)
                if before_remove is not None and admin is not None and entry.path.is_dir():
                    try:
                        await before_remove(cache, entry.path, admin)
                    except Exception as exc:  # never block the pruning on it
                        log.error("before removing %s: %s", entry.path, exc)
                await _remove(cache, entry.path)
                removed.append(entry.path)
            await git("worktree", "prune", git_dir=cache)
    if removed:
        log.info("pruned worktrees", extra={"count": len(removed)})
    return removed


def git_metadata_paths(wt: Worktree) -> list[Path]:
    """Existing paths the sandbox must mount read-only: the worktree's git metadata.

    The worktree's ``.git`` file and its admin files that locate the repository (``commondir``,
    ``gitdir``, ``config.worktree``), so the agent can neither rewrite nor replace them. Nothing
    else of the clone cache is bound into a sandbox: not its ``config`` (origin's URL), ``hooks``,
    ``info`` nor object store. The orchestrator's git never trusts any of these files (explicit
    ``GIT_DIR``, hooks off), and git inside the sandbox does not work against the cache: the
    admin dir it points to holds no ``HEAD`` there, so ``git status`` says "not a git repository".
    """
    admin = _find_admin(wt.cache, wt.path) if wt.admin is None else wt.admin
    candidates = [wt.path / ".git"]
    if admin is not None:
        candidates += [admin / "commondir", admin / "gitdir", admin / "config.worktree"]
    return [p for p in candidates if p.exists()]
