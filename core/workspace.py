"""The workspace stage: the cached clone and a worktree per agent on ``mosaic/{type}/{task}``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

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
from core.models import AgentState, SpawnRequest
from core.paths import StatePaths

if TYPE_CHECKING:
    from core.launch import Launch

log = logging.getLogger(__name__)


def agent_branch(agent: AgentState) -> str:
    return f"mosaic/{agent.agent_type.value}/{agent.task_id}"


@dataclass
class Workspace:
    worktree: Worktree
    readonly_paths: list[Path]
    pushed: bool = False
    launch: Launch | None = field(default=None, repr=False)
    baseline: TreeUsage = field(default_factory=TreeUsage)
    """The worktree's disk usage before the agent started (its disk budget counts growth)."""

    @property
    def path(self) -> Path:
        return self.worktree.path

    @property
    def branch(self) -> str:
        return self.worktree.branch


class WorkspaceManager:
    def __init__(self, paths: StatePaths) -> None:
        self.paths = paths
        self.repos = RepoCache(paths.repos)

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
        workspace = Workspace(worktree, git_metadata_paths(worktree))
        stack.push_async_callback(self._cleanup, workspace)
        workspace.baseline = await asyncio.to_thread(tree_usage, worktree.path)
        return workspace

    async def _cleanup(self, workspace: Workspace) -> None:
        try:
            await remove_worktree(workspace.worktree, delete_branch=not workspace.pushed)
        except OrchestratorError as exc:
            log.error("worktree cleanup failed: %s", exc.message)
