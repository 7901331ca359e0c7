"""An agent's change as a unified diff (SPEC §17, ``GET /agents/{agentId}/diff``).

Two sources, both against the commit the agent started from:

- a live agent's worktree (:func:`worktree_diff`): committed, staged, unstaged and untracked
  changes. The worktree's own index is never touched: a private index (``GIT_INDEX_FILE``) is
  read from the worktree's ``HEAD`` and untracked files are added to it *with intent* only
  (``add -N``: no content hashed, nothing written to the object store), then the base commit is
  diffed against the working tree;
- a finished agent's commit (:func:`commit_diff`): the pushed commit, or its kept work.

Output is bounded: git's stdout is read in chunks up to ``max_bytes`` and git is stopped beyond
(so a huge generated file never lands in this process's memory whole); a truncated diff ends at a
line boundary with a note. Secrets are masked (:func:`core.git.secrets.mask_text`) before the
text leaves this module. Every git process runs with the hardened command line and environment of
:mod:`core.git.runner` (no hooks, no external diff or textconv, no prompts).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from core.git.errors import GitError
from core.git.runner import git_argv, git_env, run_git, tail
from core.git.secrets import mask_text
from core.git.worktrees import Worktree, admin_dir

DIFF_MAX_BYTES = 4 * 1024 * 1024
"""Default cap of one diff's text (the answer of one request)."""

_CHUNK = 64 * 1024
_STDERR_MAX = 16 * 1024
_SHA = re.compile(r"^[0-9a-f]{40}(?:[0-9a-f]{24})?$")
_DIFF_ARGS = (
    "diff",
    "--no-ext-diff",
    "--no-textconv",
    "--no-color",
    "--find-renames",
    "--submodule=short",
)


def truncation_note(max_bytes: int) -> str:
    return f"\n[diff truncated: it is larger than {max_bytes} bytes]\n"


async def _capped_git(
    *args: str,
    git_dir: Path,
    work_tree: Path | None = None,
    env: Mapping[str, str] | None = None,
    max_bytes: int,
) -> tuple[int, bytes, bool, str]:
    """Run hardened git, keeping at most ``max_bytes`` of its stdout.

    Returns ``(returncode, stdout, truncated, stderr tail)``; when git writes more than
    ``max_bytes`` it is killed (its code is then meaningless and ``truncated`` is true).
    """
    extra = {**(env or {}), "GIT_DIR": str(git_dir)}
    if work_tree is not None:
        extra["GIT_WORK_TREE"] = str(work_tree)
    try:
        proc = await asyncio.create_subprocess_exec(
            *git_argv(*args),
            cwd=str(work_tree or git_dir),
            env=git_env(extra),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise GitError(f"cannot run git {args[0]}: {exc.strerror}: {exc.filename}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    stderr = proc.stderr

    async def drain_stderr() -> bytes:
        kept = b""
        while chunk := await stderr.read(_CHUNK):
            kept = (kept + chunk)[-_STDERR_MAX:]
        return kept

    errors = asyncio.create_task(drain_stderr())
    out = bytearray()
    truncated = False
    try:
        while chunk := await proc.stdout.read(_CHUNK):
            out += chunk
            if len(out) > max_bytes:
                truncated = True
                del out[max_bytes:]
                proc.kill()
                break
        code = await proc.wait()
        err = await errors
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if not errors.done():
            errors.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await errors
    return code, bytes(out), truncated, err.decode("utf-8", "replace")


async def _render(raw: bytes, truncated: bool, max_bytes: int) -> str:
    if truncated:
        cut = raw.rfind(b"\n")
        raw = raw[: cut + 1] if cut >= 0 else raw
    text = await asyncio.to_thread(mask_text, raw.decode("utf-8", "replace"))
    return text + truncation_note(max_bytes) if truncated else text


async def _diff(
    *args: str,
    git_dir: Path,
    work_tree: Path | None = None,
    env: Mapping[str, str] | None = None,
    max_bytes: int,
) -> str:
    code, raw, truncated, err = await _capped_git(
        *_DIFF_ARGS, *args, git_dir=git_dir, work_tree=work_tree, env=env, max_bytes=max_bytes
    )
    if code != 0 and not truncated:
        raise GitError(f"git diff failed (exit {code}): {tail(err) or 'no output'}")
    return await _render(raw, truncated, max_bytes)


async def resolve_commit(cache: Path, rev: str) -> str | None:
    """The commit ``rev`` names in ``cache``, or ``None`` (a missing object is not an error)."""
    found = await run_git("rev-parse", "--verify", "--quiet", "--end-of-options",
                          f"{rev}^{{commit}}", git_dir=cache)  # fmt: skip
    sha = found.stdout.strip()
    return sha if found.returncode == 0 and _SHA.match(sha) else None


async def merge_base(cache: Path, commit: str, base_branch: str) -> str | None:
    """Where ``commit`` left origin's ``base_branch``: the fallback base of an agent that has
    none recorded. ``None`` when there is no common history (or no such branch)."""
    found = await run_git("merge-base", "--end-of-options", commit,
                          f"refs/remotes/origin/{base_branch}", git_dir=cache)  # fmt: skip
    sha = found.stdout.strip()
    return sha if found.returncode == 0 and _SHA.match(sha) else None


async def commit_diff(
    cache: Path, base: str, commit: str, *, max_bytes: int = DIFF_MAX_BYTES
) -> str:
    """``base..commit`` as a unified diff, secrets masked, at most ``max_bytes`` (+ a note)."""
    return await _diff(base, commit, "--", git_dir=cache, max_bytes=max_bytes)


async def worktree_head(cache: Path, path: Path) -> str | None:
    """The commit a registered worktree of ``cache`` has checked out (``None`` if unborn)."""
    admin = await asyncio.to_thread(admin_dir, Worktree(path, "", "", "", cache))
    return await resolve_commit(admin, "HEAD")


async def worktree_diff(
    cache: Path, path: Path, base: str, *, max_bytes: int = DIFF_MAX_BYTES
) -> str:
    """The worktree at ``path`` (a registered worktree of ``cache``) against commit ``base``:
    everything it holds, untracked files included, as a unified diff (masked, bounded).

    Raises :class:`~core.git.errors.WorktreeError` when ``path`` is not a worktree of ``cache``.
    """
    admin = await asyncio.to_thread(admin_dir, Worktree(path, "", "", base, cache))
    head = await resolve_commit(admin, "HEAD") or base
    fd, index = tempfile.mkstemp(prefix="mosaic-diff-index-")
    os.close(fd)
    os.unlink(index)  # git creates it; an empty file is not a valid index
    env = {"GIT_INDEX_FILE": index}
    try:
        for args in (("read-tree", head), ("add", "--intent-to-add", "--", ".")):
            result = await run_git(*args, git_dir=admin, work_tree=path, env=env)
            if result.returncode != 0:
                raise GitError(f"cannot diff the worktree: {tail(result.stderr) or 'no output'}")
        return await _diff(base, "--", git_dir=admin, work_tree=path, env=env, max_bytes=max_bytes)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(index)
