"""Which change of an agent ``GET /agents/{agentId}/diff`` shows (SPEC §17), and against what.

- a live agent (``spawning``/``running``) whose worktree is on this host: the worktree against
  its base;
- a finished agent: its pushed commit, else its kept work (``refs/mosaic/kept/<agentId>``), else
  a commit it made but did not push, else (its run still tearing down) its worktree;
- nothing of these: :class:`~core.errors.NotFound`.

The base is the commit the agent started from (``AgentState.base_sha``), or, for an agent that has
none recorded, where its change left origin's target branch (``git merge-base``). The clone cache
is the one of the task's repository; the other caches of this host are tried after it (a task
re-spawned with another repository keeps its old agents' work where it was made).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from core.errors import NotFound, OrchestratorError
from core.git import RepoCache
from core.git.diff import (
    DIFF_MAX_BYTES,
    commit_diff,
    merge_base,
    resolve_commit,
    worktree_diff,
    worktree_head,
)
from core.git.kept import kept_ref
from core.models import LIVE_STATUSES, AgentState, TaskState
from core.paths import StatePaths


def _caches(paths: StatePaths, task: TaskState | None) -> list[Path]:
    repos = RepoCache(paths.repos)
    first: list[Path] = []
    if task is not None:
        with contextlib.suppress(OrchestratorError, ValueError):
            first.append(repos.path_for(task.request.context.repository))
    others: list[Path] = []
    with contextlib.suppress(OSError):
        others = sorted(p for p in repos.root.resolve().glob("*.git") if (p / "HEAD").is_file())
    return [c for c in first if (c / "HEAD").is_file()] + [c for c in others if c not in first]


async def _base(cache: Path, agent: AgentState, task: TaskState | None, target: str) -> str:
    if agent.base_sha:
        found = await resolve_commit(cache, agent.base_sha)
        if found:
            return found
    branch = task.request.context.branch if task is not None else "main"
    found = await merge_base(cache, target, branch)
    if found is None:  # no shared history with the branch (it was rewritten): the parent
        found = await resolve_commit(cache, f"{target}~1")
    if found is None:
        raise NotFound(f"agent {agent.agent_id}: the commit its change started from is gone")
    return found


async def _worktree(
    cache: Path, path: Path, agent: AgentState, task: TaskState | None, max_bytes: int
) -> str | None:
    try:
        head = await worktree_head(cache, path)
    except OrchestratorError:  # not a worktree of this cache
        return None
    base = await _base(cache, agent, task, head or "HEAD")
    return await worktree_diff(cache, path, base, max_bytes=max_bytes)


async def agent_diff(
    agent: AgentState,
    task: TaskState | None,
    paths: StatePaths,
    *,
    max_bytes: int = DIFF_MAX_BYTES,
) -> str:
    """The unified diff of ``agent``'s change (secrets masked, at most ``max_bytes``)."""
    if task is not None and task.task_id != agent.task_id:
        task = None
    caches = await asyncio.to_thread(_caches, paths, task)
    worktree = paths.worktree(agent.agent_id)
    has_worktree = await asyncio.to_thread(worktree.is_dir)
    if agent.status in LIVE_STATUSES:
        if has_worktree:
            for cache in caches:
                text = await _worktree(cache, worktree, agent, task, max_bytes)
                if text is not None:
                    return text
        where = f" (it runs on instance {agent.instance})" if agent.instance else ""
        raise NotFound(f"agent {agent.agent_id} has no worktree on this host{where}")
    result = agent.result
    candidates: list[str] = []
    if result is not None and result.pushed and result.commit:
        candidates.append(result.commit)
    candidates.append(kept_ref(agent.agent_id))
    if result is not None and result.commit and not result.pushed:
        candidates.append(result.commit)
    for rev in candidates:
        for cache in caches:
            commit = await resolve_commit(cache, rev)
            if commit is not None:
                base = await _base(cache, agent, task, commit)
                return await commit_diff(cache, base, commit, max_bytes=max_bytes)
    if has_worktree:  # finished, its run still tearing down (its work not kept yet)
        for cache in caches:
            text = await _worktree(cache, worktree, agent, task, max_bytes)
            if text is not None:
                return text
    raise NotFound(f"agent {agent.agent_id} has no change to show (nothing pushed or kept)")
