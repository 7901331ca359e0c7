"""The finish stage of a successful agent session (SPEC §8).

Worker: pre-commit gates -> commit -> post-commit gates -> secret scan of every new commit (blobs,
paths, messages) and of the agent's summary -> conflict check against the target branch -> push.
Reviewer and tester: their gates, and the reviewer's verdict. Any blocking step raises
``AgentFailure`` naming the step. Every text this stage shows (events, gate output, the commit
message made from the summary) passes through the secret masker first.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from core import git as gitops
from core.errors import AgentFailure, OrchestratorError
from core.gates import GateContext, GateResult, GateRunner
from core.git.secrets import ScanReport, mask_data, mask_text, scan_range
from core.models import AgentResult, AgentState, AgentType, Event, EventType, SpawnRequest
from core.paths import StatePaths
from core.run.context import RunContext
from core.run.fence import verify as verify_fence
from core.run.gate_exec import SandboxExecutor
from core.run.launch import LaunchOutcome, base_env
from core.run.workspace import Workspace
from core.settings import Settings
from core.store import StateStore
from sandbox import SandboxSpec

log = logging.getLogger(__name__)

AiReviewFactory = Callable[[AgentState, Workspace], Callable[[str], Awaitable[tuple[bool, str]]]]


class Finisher:
    def __init__(
        self,
        *,
        settings: Settings,
        store: StateStore,
        gates: GateRunner,
        sandbox_for_gates: Any,
        paths: StatePaths,
        ai_review: AiReviewFactory | None = None,
        push_non_workers: bool = False,
    ) -> None:
        self.settings = settings
        self.store = store
        self.gates = gates
        self.sandbox = sandbox_for_gates
        self.paths = paths
        self.ai_review = ai_review
        self.push_non_workers = push_non_workers

    async def _emit(self, agent: AgentState, type_: EventType | str, data: dict[str, Any]) -> None:
        await self.store.emit(
            Event(
                type=EventType(type_),
                agent_id=agent.agent_id,
                task_id=agent.task_id,
                data=mask_data(data),
            )
        )

    async def finish(
        self, run: RunContext, outcome: LaunchOutcome, result: AgentResult
    ) -> AgentResult:
        """The session succeeded: gates, commit, scan, conflicts, push (workers)."""
        assert run.workspace is not None
        agent, ws = run.agent, run.workspace
        if outcome.verdict is not None:
            result.verdict = outcome.verdict
            await self._emit(agent, EventType.REVIEW_VERDICT, {"verdict": outcome.verdict})
        ctx = self._gate_context(run)
        await self._gates(ctx, "pre", result)
        pushes = agent.agent_type is AgentType.WORKER or self.push_non_workers
        if not pushes:
            await self._gates(ctx, "post", result)
            return result
        await verify_fence(self.store, agent.agent_id, run.fence)  # never commit for another
        try:
            summary = mask_text(outcome.summary or "").strip()
            message = summary or f"{agent.task_id}: agent changes"
            commit = await gitops.commit_all(
                ws.worktree,
                message,
                author_name=self.settings.git_author_name,
                author_email=self.settings.git_author_email,
                trailers={"Mosaic-Task": agent.task_id, "Mosaic-Agent": agent.agent_id},
            )
        except OrchestratorError as exc:
            raise AgentFailure("commit", exc.message, details=result) from exc
        if commit is None:
            result.commit = None
            result.note = "no changes: nothing committed or pushed"  # type: ignore[attr-defined]
            return result
        result.commit = commit
        await self._emit(agent, EventType.GIT_COMMITTED, {"commit": commit, "branch": ws.branch})
        ctx.commit = commit
        await self._gates(ctx, "post", result)
        await self._scan(agent, ws, result, outcome.summary)
        await self._conflicts(agent, run.request, ws, result)
        await verify_fence(self.store, agent.agent_id, run.fence)  # nor push
        try:
            await gitops.push(ws.worktree)
        except OrchestratorError as exc:
            raise AgentFailure("push", exc.message, details=result) from exc
        result.pushed = ws.pushed = True  # from here on, the teardown keeps nothing
        await self._emit(agent, EventType.GIT_PUSHED, {"commit": commit, "branch": ws.branch})
        return result

    def _gate_context(self, run: RunContext) -> GateContext:
        assert run.workspace is not None and run.launch is not None
        agent, ws = run.agent, run.workspace
        # the agent's policy, without its private I/O (gateway socket, HOME)
        template: SandboxSpec = replace(run.launch.spec, rw_binds=(), env=base_env())
        if run.egress is not None:  # gates may reach what the agent may (pip, npm registries)
            template = run.egress.policy(template)
        executor = SandboxExecutor(
            self.sandbox,
            template,
            self.paths.agent_dir(agent.agent_id),
            log_cap_mb=self.settings.agent_log_mb,
            wrap=run.egress.wrap if run.egress is not None else None,
        )

        async def emit(type_: str, data: dict[str, Any]) -> None:
            await self._emit(agent, type_, data)

        return GateContext(
            agent_id=agent.agent_id,
            task_id=agent.task_id,
            agent_type=agent.agent_type.value,
            profile=agent.gate_profile.value,
            worktree=ws.path,
            executor=executor,
            emit=emit,
            custom_gates=run.request.context.gates,
            base_sha=ws.worktree.base_sha,
            ai_review=self.ai_review(agent, ws) if self.ai_review else None,
        )

    async def _gates(self, ctx: GateContext, phase: str, result: AgentResult) -> None:
        results: list[GateResult] = await self.gates.run(ctx, phase)  # type: ignore[arg-type]
        result.gates.extend(mask_data(r.model_dump(mode="json")) for r in results)
        blocking = [r for r in results if r.blocking]
        if blocking:
            first = blocking[0]
            tail = first.reason or first.output_tail.strip().splitlines()[-1:] or [""]
            detail = tail if isinstance(tail, str) else (tail[0] if tail else "")
            raise AgentFailure(
                "gates",
                f"{first.name} {first.status.value}"
                + (f": {mask_text(detail)[:300]}" if detail else ""),
                details=result,
            )

    async def _scan(
        self, agent: AgentState, ws: Workspace, result: AgentResult, summary: str | None
    ) -> None:
        try:
            report = await scan_range(
                ws.worktree,
                f"{ws.worktree.base_sha}..refs/heads/{ws.branch}",  # exactly what push sends
                max_blob_bytes=self.settings.scan_max_file_mb * 1024 * 1024,
                texts={"(summary)": summary or ""},
            )
        except OrchestratorError as exc:  # unreadable: nothing goes out unscanned
            raise AgentFailure("secrets", mask_text(exc.message), details=result) from exc
        result.scan = _scan_view(report)
        if report.clean:
            return
        await self._emit(agent, EventType.SECRET_DETECTED, result.scan)
        raise AgentFailure("secrets", report.reason(), details=result)

    async def _conflicts(
        self, agent: AgentState, request: SpawnRequest, ws: Workspace, result: AgentResult
    ) -> None:
        try:
            files = await gitops.check_conflicts(ws.worktree, request.context.branch)
        except OrchestratorError as exc:
            raise AgentFailure("conflicts", exc.message, details=result) from exc
        result.conflicts = files
        if files:
            await self._emit(
                agent, EventType.GIT_CONFLICT, {"files": files, "target": request.context.branch}
            )
            raise AgentFailure(
                "conflicts",
                f"conflicts with {request.context.branch} in {', '.join(files[:10])}",
                details=result,
            )


def _scan_view(report: ScanReport) -> dict[str, Any]:
    """The scan as shown in the agent's result and the ``secret.detected`` event (all masked)."""
    view: dict[str, Any] = {
        "findings": [
            {"path": f.path, "line": f.line, "rule": f.rule, "masked": f.masked, "commit": f.commit}
            for f in report.findings
        ]
    }
    if report.too_large:
        view["tooLarge"] = [
            {"path": b.path, "size": b.size, "limitBytes": b.limit, "commit": b.commit}
            for b in report.too_large
        ]
    return view
