"""The ``ai_review`` gate: a reviewer agent session on the agent's diff.

It runs the built-in Claude runtime as a reviewer, in a sandbox over the same worktree, with the
diff in its instructions; the gate passes when the verdict is ``approve``.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from core.logtail import last_line
from core.models import AgentState, AgentType, GateProfile, SpawnContext, SpawnRequest
from core.paths import StatePaths
from core.run.launch import SandboxPolicy
from core.run.runtimes.builtin import BuiltinRuntime
from core.run.workspace import Workspace
from core.settings import Settings
from sandbox import Sandbox

MAX_DIFF_CHARS = 60_000
REVIEW_SUFFIX = "-review"


class AiReviewer:
    def __init__(
        self, settings: Settings, sandbox: Sandbox, launcher: BuiltinRuntime, paths: StatePaths
    ) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.launcher = launcher
        self.paths = paths

    def for_workspace(self, agent: AgentState, workspace: Workspace) -> AiReviewCall:
        return AiReviewCall(self, agent, workspace.path, workspace.readonly_paths)


class AiReviewCall:
    def __init__(
        self, reviewer: AiReviewer, agent: AgentState, worktree: Path, readonly: list[Path]
    ) -> None:
        self.reviewer = reviewer
        self.agent = agent
        self.worktree = worktree
        self.readonly = readonly

    async def __call__(self, diff: str) -> tuple[bool, str]:
        r = self.reviewer
        shown = (
            diff if len(diff) <= MAX_DIFF_CHARS else diff[:MAX_DIFF_CHARS] + "\n[diff truncated]"
        )
        review = AgentState(
            agent_id=self.agent.agent_id + REVIEW_SUFFIX,
            task_id=self.agent.task_id,
            agent_type=AgentType.REVIEWER,
            gate_profile=GateProfile.MINIMAL,
        )
        request = SpawnRequest(
            task_id=self.agent.task_id,
            agent_type=AgentType.REVIEWER,
            context=SpawnContext(
                repository=str(self.worktree),
                instructions="Review this change and answer with a VERDICT line.\n\n" + shown,
            ),
        )
        log_dir = r.paths.agent_dir(self.agent.agent_id) / "ai-review"
        policy = SandboxPolicy.from_settings(r.settings, readonly=self.readonly, hidden=[])
        async with contextlib.AsyncExitStack() as stack:
            launch = await r.launcher.prepare(
                review, request, worktree=self.worktree, agent_dir=log_dir, policy=policy,
                stack=stack,
            )  # fmt: skip
            process = await r.sandbox.start(launch.spec)
            stack.push_async_callback(process.cleanup)
            try:
                code = await asyncio.wait_for(process.wait(), r.settings.agent_max_wall_s)
            except TimeoutError:
                await process.kill(r.settings.kill_grace_s)
                return False, "the reviewer session timed out"
            outcome = launch.outcome(await asyncio.to_thread(last_line, log_dir / "stdout.log"))
        if code != 0 or outcome.verdict is None:
            return False, outcome.error or f"the reviewer gave no verdict (exit code {code})"
        comments = "\n".join(f"- {c}" for c in outcome.verdict.get("comments", []))
        approved = outcome.verdict.get("decision") == "approve"
        return approved, comments or (outcome.summary or "")
