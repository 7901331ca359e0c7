"""The ``ai_review`` gate: the diff of the agent's commits, judged by the configured reviewer."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from core.gates.models import AiReview, GateStatus
from core.git.runner import run_git_bytes

MAX_DIFF_CHARS = 400_000
_REV = re.compile(r"^[\w./@^~{}-]{1,200}$")


@dataclass(frozen=True)
class ReviewOutcome:
    status: GateStatus
    reason: str | None
    output: str = ""


async def git_diff(worktree: Path, base: str, head: str, timeout_s: float) -> str:
    """``git diff base..head`` in ``worktree`` (run on the host, no hooks, no external diff)."""
    for rev in (base, head):
        if not _REV.match(rev) or rev.startswith("-"):
            raise ValueError(f"invalid revision {rev!r}")
    async with asyncio.timeout(timeout_s):  # cancelling the runner kills git
        code, out, err = await run_git_bytes(
            "diff", "--no-color", "--no-ext-diff", "--no-textconv", f"{base}..{head}",
            cwd=worktree,
        )  # fmt: skip
    if code != 0:
        raise RuntimeError(f"git diff failed: {err.decode(errors='replace').strip()[-500:]}")
    return out.decode("utf-8", errors="replace")


async def review(
    reviewer: AiReview | None,
    worktree: Path,
    base_sha: str | None,
    commit: str | None,
    timeout_s: float,
) -> ReviewOutcome:
    if reviewer is None:
        return ReviewOutcome(GateStatus.SKIPPED, "no AI reviewer configured for this run")
    if not base_sha:
        return ReviewOutcome(GateStatus.SKIPPED, "no base commit to diff against")
    head = commit or "HEAD"
    try:
        diff = await git_diff(worktree, base_sha, head, timeout_s)
    except (OSError, ValueError, RuntimeError, TimeoutError) as exc:
        return ReviewOutcome(GateStatus.ERROR, f"could not compute the diff: {exc or 'timeout'}")
    if not diff.strip():
        return ReviewOutcome(
            GateStatus.SKIPPED, f"nothing to review: {base_sha[:12]}..{head} is empty"
        )
    if len(diff) > MAX_DIFF_CHARS:
        diff = diff[:MAX_DIFF_CHARS] + f"\n[diff truncated at {MAX_DIFF_CHARS} characters]\n"
    try:
        async with asyncio.timeout(timeout_s):
            approved, comments = await reviewer(diff)
    except TimeoutError:
        return ReviewOutcome(GateStatus.ERROR, f"AI review timed out after {timeout_s:g}s")
    except Exception as exc:
        return ReviewOutcome(GateStatus.ERROR, f"AI review failed: {type(exc).__name__}: {exc}")
    if approved:
        return ReviewOutcome(GateStatus.PASSED, None, comments)
    return ReviewOutcome(GateStatus.FAILED, "the AI reviewer did not approve the change", comments)
