"""Conflict detection against the target branch, without touching any checkout."""

from __future__ import annotations

import logging

from core.git.errors import BaseNotFound, GitError
from core.git.locks import repo_lock
from core.git.runner import failure, run_git, tail
from core.git.validation import validate_branch
from core.git.worktrees import Worktree, admin_dir

log = logging.getLogger(__name__)


async def fetch_branch(wt: Worktree, branch: str) -> str:
    """Fetch origin's ``branch`` into ``refs/remotes/origin/<branch>``; return its SHA."""
    ref = f"refs/remotes/origin/{branch}"
    async with repo_lock(wt.cache):
        result = await run_git(
            "fetch",
            "--no-tags",
            "--quiet",
            "origin",
            f"+refs/heads/{branch}:{ref}",
            git_dir=wt.cache,
            credentials=wt.credentials,
        )
    if result.returncode != 0:
        if "couldn't find remote ref" in result.stderr:
            raise BaseNotFound(f"target branch {branch!r} does not exist in origin")
        raise GitError(
            f"cannot fetch {branch!r} from origin: {tail(result.stderr) or 'no output'}",
            command="git fetch",
            returncode=result.returncode,
        )
    sha = await run_git("rev-parse", "--verify", "--quiet", ref, git_dir=wt.cache)
    return sha.stdout.strip()


async def check_conflicts(wt: Worktree, target: str) -> list[str]:
    """Fetch origin's latest ``target``, merge it with the worktree's HEAD in memory.

    Returns ``[]`` when the merge would be clean, else the sorted conflicting paths.
    Uses ``git merge-tree --write-tree`` (git >= 2.38), which writes no checkout and no index.
    """
    validate_branch(target)
    target_sha = await fetch_branch(wt, target)
    args = ("merge-tree", "--write-tree", "--name-only", "-z", "--no-messages", target_sha, "HEAD")
    result = await run_git(*args, git_dir=admin_dir(wt), cwd=wt.path)
    if result.returncode == 0:
        return []
    if result.returncode != 1:
        raise failure(args, result, what=f"conflict check against {target!r}")
    fields = result.stdout.split("\0")
    paths = sorted({f for f in fields[1:] if f})
    log.info(
        "merge conflict with target",
        extra={"branch": wt.branch, "target": target, "files": len(paths)},
    )
    return paths
