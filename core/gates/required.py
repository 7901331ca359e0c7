"""Gates that must actually run (SPEC §17, gate integrity).

A gate that a **worker's** profile requires (every gate of the resolved profile, including
``custom`` gates named in the request or listed in the base ``.mosaic/gates.toml``) is
*required* unless the ``.mosaic/gates.toml`` of the base commit disables it (``lint = false``).
A required gate that turns out ``skipped`` blocks the push: an agent cannot make its gates pass
by removing what they run (the tests, the build files), and a repository without a type checker
says so on its base branch (``typecheck = false``) instead of every run skipping it silently.

Exceptions, where a skip is not a weakened gate:

- reviewers and testers: a skipped gate neither passes nor blocks (they push nothing by default);
- ``ai_review`` with nothing to review (an empty diff);
- a worker with nothing to push: in the ``pre`` phase (before the orchestrator commits) a worker
  whose worktree has no change is not blocked by a skip, since no push follows.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.gates.models import GateContext, GateResult, GateStatus
from core.gates.profiles import AI_REVIEW
from core.gates.repo_config import REPO_CONFIG, RepoGateConfig
from core.gates.tree import run_bounded
from core.git.runner import git_argv

WORKER = "worker"
NOTHING_TO_REVIEW = "nothing to review"
"""Start of the ``ai_review`` skip reason for an empty diff (not a weakened gate)."""


def gate_required(ctx: GateContext, gate: str, repo: RepoGateConfig | None) -> bool:
    """Whether ``gate`` of ``ctx``'s profile must run (its skip blocks)."""
    return ctx.agent_type == WORKER and not (repo is not None and repo.disabled(gate))


def why_blocking(gate: str, profile: str) -> str:
    """What a blocking skip's reason adds: why it blocks and what the operator can do."""
    what = (
        "configure a model for the AI review"
        if gate == AI_REVIEW
        else f'give it a command ([gates] {gate} = "...")'
    )
    return (
        f"the {profile or 'default'} profile requires {gate}, so a worker's change is not "
        f"pushed while it is skipped: {what}, or set {gate} = false in {REPO_CONFIG} on the "
        "base branch to run without it"
    )


class RequiredRule:
    """Applies the rule to one phase's results, in order (each before it is reported)."""

    def __init__(
        self,
        ctx: GateContext,
        repo: RepoGateConfig | None,
        profile: str,
        *,
        config_problem: str | None = None,
    ) -> None:
        self._ctx = ctx
        self._repo = repo
        self._profile = profile
        self._config_problem = config_problem
        """Why the base configuration could not be read (then no gate counts as disabled)."""
        self._pending: bool | None = None

    async def apply(self, result: GateResult) -> GateResult:
        """``result`` marked ``required`` when it is; a blocking skip's reason says why."""
        if not gate_required(self._ctx, result.name, self._repo):
            return result
        if result.status is GateStatus.SKIPPED:
            if result.name == AI_REVIEW and (result.reason or "").startswith(NOTHING_TO_REVIEW):
                return result
            if not await self._something_to_push():
                return result
            why = why_blocking(result.name, self._profile)
            if self._config_problem:
                why += f" ({self._config_problem})"
            result.reason = f"{result.reason}; {why}" if result.reason else why
        result.required = True
        return result

    async def _something_to_push(self) -> bool:
        if self._ctx.commit is not None:
            return True
        if self._pending is None:
            self._pending = await asyncio.to_thread(worktree_has_changes, self._ctx.worktree)
        return self._pending


def worktree_has_changes(worktree: Path) -> bool:
    """Whether the orchestrator's commit would hold anything (blocking; true when unsure).

    ``git status --porcelain`` with untracked files, as ``git add --all`` sees them; only its
    first byte is read, so a worktree with a million new files costs no memory.
    """
    argv = git_argv(
        "-C", str(worktree), "status", "--porcelain", "-z", "--untracked-files=all",
        "--ignore-submodules=none",
    )  # fmt: skip
    try:
        code, out, truncated, _err = run_bounded(argv, 1)
    except OSError:
        return True
    return (code != 0 and not truncated) or bool(out)
