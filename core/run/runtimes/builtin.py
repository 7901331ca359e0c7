"""The ``builtin`` runtime: the SDK agent loop (``core/agents/runtime.py``) in the sandbox.

Each agent gets a private I/O directory outside the state directory (bound read-write into its
sandbox) holding its runtime config, its transcript and its model-gateway socket; the API key
stays in the orchestrator's gateway and never enters the sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path

from core.agents import (
    AgentRuntimeError,
    ModelGateway,
    build_prompts,
    build_runtime_config,
    parse_runtime_result,
    runtime_argv,
    runtime_ro_binds,
)
from core.models import AgentState, SpawnRequest
from core.run.iodir import write_private
from core.run.launch import Launch, LaunchOutcome, SandboxPolicy, base_env
from core.run.runtimes.base import model_endpoint
from core.run.skills import resolve_skills, skills_prompt
from core.safeio import MiB, RefusedFile, copy_tail
from core.settings import Settings
from sandbox import SandboxSpec
from sandbox.runtime_binds import python_binds

log = logging.getLogger(__name__)

TRANSCRIPT = "transcript.jsonl"


class BuiltinLaunch(Launch):
    def __init__(self, spec: SandboxSpec, io_dir: Path, *, transcript_max_bytes: int) -> None:
        super().__init__(spec)
        self.io_dir = io_dir
        self.transcript_max_bytes = transcript_max_bytes

    async def _collect(self) -> None:
        """Copy the transcript into the agent's logs: its last ``transcript_max_bytes`` only.

        The I/O directory is the agent's: a transcript that is a symbolic link (to a host file),
        a FIFO or anything but a regular file is not copied.
        """
        target = self.spec.log_dir / TRANSCRIPT

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                copy_tail(
                    TRANSCRIPT,
                    target,
                    self.transcript_max_bytes,
                    root=self.io_dir,
                    whole_lines=True,
                )
            except (RefusedFile, OSError) as exc:
                log.warning(
                    "transcript not copied: %s", exc, extra={"agent_id": self.spec.agent_id}
                )

        await asyncio.to_thread(copy)

    def outcome(self, last_stdout_line: str | None) -> LaunchOutcome:
        if not last_stdout_line:
            return LaunchOutcome(summary=None, error="the agent runtime printed no result")
        try:
            result = parse_runtime_result(last_stdout_line)
        except AgentRuntimeError as exc:
            return LaunchOutcome(summary=last_stdout_line, error=str(exc))
        verdict = result.verdict.model_dump() if result.verdict else None
        error = None
        if result.status == "failed":
            error = f"budget: {result.error}" if result.budget else (result.error or "failed")
        return LaunchOutcome(
            summary=result.summary or None, verdict=verdict, usage=result.usage, error=error
        )


class BuiltinRuntime:
    name = "builtin"

    def __init__(
        self, settings: Settings, gateway: ModelGateway, skills_dir: Path | None = None
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.skills_dir = skills_dir

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
        io_dir, endpoint = await model_endpoint(self.gateway, self.settings, agent, stack)
        ctx = request.context
        system, prompt = build_prompts(
            agent.agent_type, agent.task_id, ctx.work_items, ctx.skills, ctx.instructions
        )
        skills = await asyncio.to_thread(resolve_skills, self.skills_dir, ctx.skills)
        system += skills_prompt(skills)
        config = build_runtime_config(
            agent_id=agent.agent_id,
            role=agent.agent_type,
            system=system,
            prompt=prompt,
            model=self.settings.mosaic_model,
            socket=endpoint.socket_path,
            token=endpoint.token,
            workdir=worktree,
            transcript=io_dir / TRANSCRIPT,
            max_turns=self.settings.agent_max_turns,
            max_tokens=self.settings.agent_max_tokens,
            max_wall_s=self.settings.agent_max_wall_s,
        )
        config_path = io_dir / "config.json"
        await asyncio.to_thread(write_private, config_path, json.dumps(config))
        spec = policy.spec(
            agent.agent_id,
            runtime_argv(config_path),
            worktree=worktree,
            env=base_env(),
            log_dir=agent_dir,
            ro_binds=tuple(dict.fromkeys((*runtime_ro_binds(), *python_binds(sys.executable)))),
            rw_binds=(io_dir,),
        )
        launch = BuiltinLaunch(spec, io_dir, transcript_max_bytes=self.settings.agent_log_mb * MiB)
        stack.push_async_callback(launch.collect)  # also when the agent is killed
        return launch
