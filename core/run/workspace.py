"""The workspace stage: the cached clone and a worktree per agent on ``mosaic/{type}/{task}``.

Removing a workspace whose branch was not pushed first keeps its work: whatever the worktree
holds beyond its base is committed to ``refs/mosaic/kept/<agentId>`` (``core.git.kept``), so a
failed, killed or retried agent's changes survive; the worktree itself is always removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

from core.diskusage import TreeUsage, tree_usage
from core.errors import AgentFailure, OrchestratorError
from core.git import (
    RepoCache,
    Worktree,
    create_worktree,
    git_metadata_paths,
    remove_worktree,
    repository_credentials,
)
from core.git.kept import keep_work, kept_ref, restore_kept
from core.models import AgentState, SpawnRequest
from core.paths import StatePaths

log = logging.getLogger(__name__)

TEARDOWN_CONCURRENCY = 4
"""Workspaces torn down (kept work committed, worktree removed) at once: each is a handful of git
processes, and a kill-all ends hundreds of runs together."""


def agent_branch(agent: AgentState) -> str:
    return f"mosaic/{agent.agent_type.value}/{agent.task_id}"


@dataclass
class Workspace:
    worktree: Worktree
    readonly_paths: list[Path]
    agent_id: str = ""
    pushed: bool = False
    """Set by the finish stage once the branch reached the origin: the teardown keeps nothing."""
    baseline: TreeUsage = field(default_factory=TreeUsage)
    """The worktree's disk usage before the agent started (its disk budget counts growth)."""

    @property
    def path(self) -> Path:
        return self.worktree.path

    @property
    def branch(self) -> str:
        return self.worktree.branch


class WorkspaceManager:
    def __init__(
        self,
        paths: StatePaths,
        *,
        author_name: str = "Mosaic Orchestrator",
        author_email: str = "orchestrator@mosaic.local",
    ) -> None:
        self.paths = paths
        self.repos = RepoCache(paths.repos)
        self.author = (author_name, author_email)
        self._teardowns = asyncio.Semaphore(TEARDOWN_CONCURRENCY)

    async def prepare(
        self, agent: AgentState, request: SpawnRequest, stack: contextlib.AsyncExitStack
    ) -> Workspace:
        try:
            cache = await self.repos.ensure(request.context.repository)
            worktree = await create_worktree(
                cache,
                self.paths.worktree(agent.agent_id),
                branch=agent_branch(agent),
                base=request.context.branch,
                # origin's user/token, if the URL has them: in memory, for the fetch and push
                credentials=repository_credentials(request.context.repository),
            )
        except OrchestratorError as exc:
            raise AgentFailure("workspace", exc.message, retryable=True) from exc
        workspace = Workspace(worktree, git_metadata_paths(worktree), agent.agent_id)
        stack.push_async_callback(self._cleanup, workspace)
        try:  # a retry goes on from what the earlier attempt left (its kept work)
            restored = await restore_kept(worktree, agent.agent_id)
        except OrchestratorError as exc:
            log.warning("kept work not restored: %s", exc.message)
        else:
            if restored is not None:
                log.info(
                    "the earlier attempt's work (%s) is back in the worktree",
                    restored[:12],
                    extra={"agent_id": agent.agent_id},
                )
        workspace.baseline = await asyncio.to_thread(tree_usage, worktree.path)
        return workspace

    async def _cleanup(self, workspace: Workspace) -> None:
        async with self._teardowns:
            await self._teardown(workspace)

    async def _teardown(self, workspace: Workspace) -> None:
        if not workspace.pushed and workspace.agent_id:
            try:
                sha = await keep_work(
                    workspace.worktree,
                    workspace.agent_id,
                    author_name=self.author[0],
                    author_email=self.author[1],
                )
            except OrchestratorError as exc:  # never lose the cleanup over it
                log.error("could not keep the agent's work: %s", exc.message)
            else:
                if sha is not None:
                    log.info(
                        "kept the agent's unpushed work at %s (%s)",
                        kept_ref(workspace.agent_id),
                        sha[:12],
                        extra={"agent_id": workspace.agent_id},
                    )
        try:
            await remove_worktree(workspace.worktree, delete_branch=not workspace.pushed)
        except OrchestratorError as exc:
            log.error("worktree cleanup failed: %s", exc.message)
