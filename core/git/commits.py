"""Committing an agent's work and reading what it changed."""

from __future__ import annotations

import re

from core.errors import ValidationFailed
from core.git.errors import WorktreeError
from core.git.runner import run_git
from core.git.worktrees import Worktree, admin_dir, wt_git

_TRAILER_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
_IDENTITY_FORBIDDEN = re.compile(r"[<>\x00-\x1f\x7f]")


def _check_identity(name: str, email: str) -> None:
    for label, value in (("author name", name), ("author email", email)):
        if not value.strip() or _IDENTITY_FORBIDDEN.search(value):
            raise ValidationFailed(
                f"invalid {label} {value!r}: empty or contains <, > or control chars"
            )


def build_message(message: str, trailers: dict[str, str]) -> str:
    """The commit message: the text, then one ``Key: value`` trailer per line."""
    text = message.replace("\0", "").strip()
    if not text:
        raise ValidationFailed("commit message is empty")
    lines = []
    for key, value in trailers.items():
        if not _TRAILER_KEY.match(key):
            raise ValidationFailed(f"invalid trailer key {key!r}: use letters, digits and '-'")
        if not value.strip() or any(c in value for c in "\r\n\0"):
            raise ValidationFailed(f"invalid value for trailer {key!r}: empty or multi-line")
        lines.append(f"{key}: {value.strip()}")
    return text + ("\n\n" + "\n".join(lines) if lines else "") + "\n"


async def _check_on_branch(wt: Worktree) -> None:
    head = (await run_git("symbolic-ref", "-q", "HEAD", git_dir=admin_dir(wt))).stdout.strip()
    if head != f"refs/heads/{wt.branch}":
        raise WorktreeError(
            f"worktree {wt.path} is not on branch {wt.branch} (HEAD is {head or 'detached'})"
        )


async def commit_all(
    wt: Worktree,
    message: str,
    *,
    author_name: str,
    author_email: str,
    trailers: dict[str, str],
) -> str | None:
    """Commit every change in the worktree, untracked files included; ``None`` if nothing changed.

    Hooks never run (``--no-verify``, ``core.hooksPath=/dev/null``). Returns the new commit's SHA.
    """
    _check_identity(author_name, author_email)
    text = build_message(message, trailers)
    await _check_on_branch(wt)
    await wt_git(wt, "add", "--all", "--", ".")
    admin = admin_dir(wt)
    staged = await run_git(
        "diff", "--cached", "--quiet", "--no-ext-diff", git_dir=admin, work_tree=wt.path
    )
    if staged.returncode == 0:
        return None
    env = {
        "GIT_AUTHOR_NAME": author_name,
        "GIT_AUTHOR_EMAIL": author_email,
        "GIT_COMMITTER_NAME": author_name,
        "GIT_COMMITTER_EMAIL": author_email,
    }
    result = await run_git(
        "commit",
        "--quiet",
        "--no-verify",
        "--cleanup=whitespace",
        "--file=-",
        git_dir=admin,
        work_tree=wt.path,
        cwd=wt.path,
        env=env,
        stdin=text,
    )
    if result.returncode != 0:
        raise WorktreeError(f"commit failed: {result.stderr.strip()[-500:]}")
    return (await wt_git(wt, "rev-parse", "HEAD")).strip()


async def new_commits(wt: Worktree) -> list[str]:
    """SHAs of the commits on the worktree's branch since ``base_sha``, oldest first."""
    out = await wt_git(wt, "rev-list", "--reverse", f"{wt.base_sha}..HEAD")
    return out.split()


async def diff_text(wt: Worktree) -> str:
    """``git diff base_sha..HEAD`` (no external diff, no textconv, no colour)."""
    return await wt_git(
        wt, "diff", "--no-ext-diff", "--no-textconv", "--no-color", f"{wt.base_sha}..HEAD"
    )
