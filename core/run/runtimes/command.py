"""The ``command`` runtime: ``MOSAIC_AGENT_COMMAND`` run with ``sh -c`` in the worktree (SPEC §8).

Exit 0 means the session succeeded; its last stdout line is the summary.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from core.models import AgentState, SpawnRequest
from core.run.launch import Launch, SandboxPolicy, agent_env


class CommandRuntime:
    name = "command"

    def __init__(self, command: str) -> None:
        self.command = command

    def forget(self, agent_id: str) -> None:
        """Nothing outlives an attempt."""

    async def prepare(
        self,
        agent: AgentState,
        request: SpawnRequest,
        *,
        worktree: Path,
        agent_dir: Path,
        policy: SandboxPolicy,
        stack: contextlib.AsyncExitStack,
    ) -> Launch:
        spec = policy.spec(
            agent.agent_id,
            ["/bin/sh", "-c", self.command],
            worktree=worktree,
            env=agent_env(agent, request, worktree),
            log_dir=agent_dir,
        )
        return Launch(spec)
