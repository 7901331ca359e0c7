"""Kept work: what an agent changed survives its failure (SPEC §17 "Kept work").

When an agent's worktree is removed without its branch having been pushed, whatever it holds
beyond its base (commits on the branch, staged, unstaged and untracked changes) is committed,
never pushed, to ``refs/mosaic/kept/<agentId>`` in the clone cache. The commit is made with a
private index (``GIT_INDEX_FILE``), so neither the branch nor the worktree's own index moves, and
its committer date is the time it was kept, which :func:`expire_kept` reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from pathlib import Path

from core.git.errors import GitError
from core.git.runner import run_git
from core.git.worktrees import Worktree, admin_dir

log = logging.getLogger(__name__)

KEPT_PREFIX = "refs/mosaic/kept/"
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def kept_ref(agent_id: str) -> str:
    if not _AGENT_ID.match(agent_id):
        raise GitError(f"invalid agent id {agent_id!r}")
    return KEPT_PREFIX + agent_id


async def keep_work(
    wt: Worktree, agent_id: str, *, author_name: str, author_email: str
) -> str | None:
    """Commit the worktree's state to ``refs/mosaic/kept/<agent_id>``; its SHA, or ``None``
    when the worktree holds nothing beyond its base (then no ref is written)."""
    return await _keep(admin_dir(wt), wt.path, wt.cache, wt.base_sha, agent_id, author_name,
                       author_email)  # fmt: skip


async def keep_orphan(
    cache: Path, path: Path, admin: Path, agent_id: str, *, author_name: str, author_email: str
) -> str | None:
    """Keep the work of a worktree found without its agent's run (a crashed instance): what it
    holds beyond origin's branches (unpushed commits or changes)."""
    return await _keep(admin, path, cache, None, agent_id, author_name, author_email)


async def _keep(
    admin: Path,
    path: Path,
    cache: Path,
    base_sha: str | None,
    agent_id: str,
    author_name: str,
    author_email: str,
) -> str | None:
    head = await run_git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", git_dir=admin)
    if head.returncode != 0 and base_sha is None:
        return None
    parent = head.stdout.strip() if head.returncode == 0 else str(base_sha)
    unpushed = False
    if base_sha is None:  # beyond origin: unpushed commits, or changes to the head's tree
        ahead = await run_git("rev-list", "-1", parent, "--not", "--remotes", git_dir=cache)
        unpushed, base_sha = bool(ahead.stdout.strip()), parent
    fd, index = tempfile.mkstemp(prefix="mosaic-kept-index-")
    os.close(fd)
    os.unlink(index)  # git creates it; an empty file is not a valid index
    env = {
        "GIT_INDEX_FILE": index,
        "GIT_AUTHOR_NAME": author_name,
        "GIT_AUTHOR_EMAIL": author_email,
        "GIT_COMMITTER_NAME": author_name,
        "GIT_COMMITTER_EMAIL": author_email,
    }
    try:
        for args in (("read-tree", parent), ("add", "--all", "--", ".")):
            result = await run_git(*args, git_dir=admin, work_tree=path, env=env)
            if result.returncode != 0:
                raise GitError(f"cannot keep the work of {agent_id}: {result.stderr.strip()}")
        tree = await run_git("write-tree", git_dir=admin, work_tree=path, env=env)
        base_tree = await run_git("rev-parse", f"{base_sha}^{{tree}}", git_dir=admin)
        if tree.returncode != 0 or base_tree.returncode != 0:
            raise GitError(f"cannot keep the work of {agent_id}: {tree.stderr.strip()}")
        if tree.stdout.strip() == base_tree.stdout.strip() and not unpushed:
            return None  # nothing beyond the base
        message = f"Kept work of agent {agent_id} (not pushed)\n\nMosaic-Agent: {agent_id}\n"
        commit = await run_git(
            "commit-tree", tree.stdout.strip(), "-p", parent, git_dir=admin, env=env, stdin=message
        )
        if commit.returncode != 0:
            raise GitError(f"cannot keep the work of {agent_id}: {commit.stderr.strip()}")
        sha = commit.stdout.strip()
        ref = await run_git("update-ref", kept_ref(agent_id), sha, git_dir=cache)
        if ref.returncode != 0:
            raise GitError(f"cannot keep the work of {agent_id}: {ref.stderr.strip()}")
        return sha
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index)


async def kept_commit(cache: Path, agent_id: str) -> str | None:
    """The kept commit of ``agent_id`` in ``cache``, if any."""
    result = await run_git("rev-parse", "--verify", "--quiet", kept_ref(agent_id), git_dir=cache)
    return result.stdout.strip() if result.returncode == 0 else None


async def restore_kept(wt: Worktree, agent_id: str) -> str | None:
    """Bring an earlier attempt's kept work back into ``wt`` (a new attempt's fresh worktree on
    origin's current base) as uncommitted changes: the unpushed commits and changes the kept
    commit holds, replayed onto the new base. Returns the kept SHA, or None when there is none
    or it does not apply cleanly (the worktree is then left clean at its base)."""
    sha = await kept_commit(wt.cache, agent_id)
    if sha is None:
        return None
    admin = admin_dir(wt)
    picked = await run_git(
        "cherry-pick", "--no-commit", sha, "--not", "--remotes", git_dir=admin, work_tree=wt.path
    )
    if picked.returncode != 0:
        await run_git("cherry-pick", "--abort", git_dir=admin, work_tree=wt.path)
        await run_git("reset", "-q", "--hard", "HEAD", git_dir=admin, work_tree=wt.path)
        await run_git("clean", "-q", "-fdx", git_dir=admin, work_tree=wt.path)
        log.warning(
            "the kept work of %s does not apply to the new base: starting clean (%s)",
            agent_id,
            picked.stderr.strip()[:300],
        )
        return None
    await run_git("reset", "-q", git_dir=admin, work_tree=wt.path)  # changes, not staged
    return sha


async def expire_kept(cache: Path, max_age_s: float, *, now: float | None = None) -> list[str]:
    """Delete kept refs older than ``max_age_s``; the agent ids whose work expired."""
    listed = await run_git(
        "for-each-ref", "--format=%(refname) %(committerdate:unix)", KEPT_PREFIX, git_dir=cache
    )
    cutoff = (time.time() if now is None else now) - max_age_s
    expired = []
    for line in listed.stdout.splitlines():
        ref, _, stamp = line.rpartition(" ")
        if ref.startswith(KEPT_PREFIX) and stamp.isdigit() and int(stamp) < cutoff:
            deleted = await run_git("update-ref", "-d", ref, git_dir=cache)
            if deleted.returncode == 0:
                expired.append(ref.removeprefix(KEPT_PREFIX))
    return expired
