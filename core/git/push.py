"""Pushing an agent's branch to origin."""

from __future__ import annotations

import logging

from core.git.errors import PushRejected
from core.git.locks import repo_lock
from core.git.runner import run_git, tail
from core.git.worktrees import Worktree

log = logging.getLogger(__name__)

_LOCAL_RECEIVE_PACK = "git -c core.hooksPath=/dev/null receive-pack"


def _is_local(url: str) -> bool:
    return url.startswith("/") or url.lower().startswith("file://")


def _reason(porcelain: str, stderr: str) -> str:
    for line in porcelain.splitlines():
        if line.startswith("!"):
            parts = line.split("\t")
            if len(parts) >= 3:
                return parts[2].strip()
    return tail(stderr, 400) or "no output"


async def push(wt: Worktree) -> None:
    """Push ``refs/heads/<branch>`` to origin with ``--force-with-lease``.

    The lease expects origin's branch where the last fetch saw it (absent for a first push), so a
    retry may replace its own previous attempt but never someone else's newer work. Hooks do not
    run: not locally (``--no-verify``) and, for a local origin, not in origin's receive-pack either.
    Origin's credentials come from ``wt.credentials`` (never from the clone's config).
    Raises :class:`PushRejected` with origin's reason (credentials scrubbed).
    """
    ref = f"refs/heads/{wt.branch}"
    async with repo_lock(wt.cache):
        tracking = await run_git(
            "rev-parse",
            "--verify",
            "--quiet",
            f"refs/remotes/origin/{wt.branch}",
            git_dir=wt.cache,
        )
        expect = tracking.stdout.strip() if tracking.returncode == 0 else ""
        url = (await run_git("config", "--get", "remote.origin.url", git_dir=wt.cache)).stdout
        args = ["push", "--porcelain", "--no-verify", f"--force-with-lease={ref}:{expect}"]
        if _is_local(url.strip()):
            args.append(f"--receive-pack={_LOCAL_RECEIVE_PACK}")
        result = await run_git(
            *args, "origin", f"{ref}:{ref}", git_dir=wt.cache, credentials=wt.credentials
        )
    if result.returncode != 0:
        reason = _reason(result.stdout, result.stderr)
        log.warning("push rejected", extra={"branch": wt.branch, "reason": reason})
        raise PushRejected(
            f"push of {wt.branch} to origin rejected: {reason}",
            command="git push",
            returncode=result.returncode,
            stderr=tail(result.stderr),
        )
    log.info("branch pushed", extra={"branch": wt.branch})
