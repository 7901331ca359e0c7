"""The ``claude-code`` runtime: the Claude Code CLI headless in the sandbox (SPEC §15).

The CLI runs as the unprivileged sandbox user in the worktree, permission prompts bypassed, with
``--output-format stream-json --verbose``. It reaches the model only through the agent's gateway:
the gateway's Unix socket (in the agent's I/O dir) is forwarded to a loopback port of the
sandbox's own network namespace (``sandbox/forwarder.py``), ``ANTHROPIC_BASE_URL`` points there
and ``ANTHROPIC_API_KEY`` is the per-agent gateway token, never the real key.

Its HOME is a private per-agent directory outside the worktree that survives the agent's
attempts (so a retry resumes the session kept in the status as ``sessionId``) and is removed when
the agent ends. The skills a spawn names are bound read-only and linked as
``~/.claude/skills/<name>``. Its stream-json lines become activities as they are written; the
final ``result`` line is the session's outcome (summary, turns, usage, cost, a reviewer's verdict).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
from pathlib import Path

from core.agents import ModelGateway, build_prompts
from core.agents.claude_code import StreamParser, claude_argv, claude_binds, claude_env
from core.models import AgentState, SpawnRequest
from core.run.iodir import io_root
from core.run.launch import (
    ActivitySink,
    Launch,
    LaunchOutcome,
    SandboxPolicy,
    SessionSink,
    base_env,
)
from core.run.runtimes.base import model_endpoint
from core.run.skills import Skill, resolve_skills
from core.safeio import RefusedFile, read_tail
from core.settings import Settings
from sandbox import SandboxSpec
from sandbox.forwarder import forwarder_argv, forwarder_path
from sandbox.runtime_binds import python_binds

GATEWAY_PORT = 41080
"""The gateway's loopback port inside every sandbox (each has its own network namespace)."""
POLL_S = 0.25
READ_MAX = 1024 * 1024
RESULT_TAIL = 256 * 1024


def home_dir(agent_id: str) -> Path:
    """The agent's Claude Code HOME: kept across attempts, removed when the agent ends."""
    return io_root() / f"{agent_id}.home"


def remove_home(agent_id: str) -> None:
    shutil.rmtree(home_dir(agent_id), ignore_errors=True)


class ClaudeCodeLaunch(Launch):
    def __init__(self, spec: SandboxSpec, *, role: str) -> None:
        super().__init__(spec)
        self.role = role

    async def follow(
        self, activity: ActivitySink, session: SessionSink, ended: asyncio.Event
    ) -> None:
        """Tail stdout.log: each new tool call is an activity; the session id once known. Once
        the session ``ended``, what is left of the log is read, then it returns."""
        parser = StreamParser(cwd=str(self.spec.workdir))
        path = self.spec.log_dir / "stdout.log"
        offset, pending, reported = 0, b"", None
        while True:
            last = ended.is_set()
            chunk, offset = await asyncio.to_thread(_read_from, path, offset)
            if chunk:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > READ_MAX:
                    pending = b""  # a line too long to be one of ours: drop it
                for raw in lines:
                    for act in parser.feed(raw.decode("utf-8", "replace")):
                        await activity(act.tool, act.summary)
                if parser.session_id and parser.session_id != reported:
                    reported = parser.session_id
                    await session(reported)
                continue
            if last:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), POLL_S)

    def outcome(self, last_stdout_line: str | None) -> LaunchOutcome:
        """From the log's last ``RESULT_TAIL`` bytes (the ``result`` line is long: the usage of
        every model it used); blocking, called in a thread."""
        parser = StreamParser(cwd=str(self.spec.workdir))
        try:
            tail = read_tail(self.spec.log_dir / "stdout.log", RESULT_TAIL) or b""
        except (RefusedFile, OSError):
            tail = b""
        for line in tail.decode("utf-8", "replace").splitlines()[-50:]:
            parser.feed(line)
        if parser.result is None:
            return LaunchOutcome(summary=None, error="Claude Code ended without a result")
        result = parser.runtime_result(self.role)
        verdict = result.verdict.model_dump() if result.verdict else None
        error = None
        if result.status == "failed":
            error = f"budget: {result.error}" if result.budget else (result.error or "failed")
        return LaunchOutcome(
            summary=result.summary or None, verdict=verdict, usage=result.usage, error=error
        )


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """New bytes of a log from ``offset`` (at most ``READ_MAX``); a log that shrank (capped to
    its tail) is read again from its start."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < offset:
                offset = 0
            fh.seek(offset)
            data = fh.read(READ_MAX)
    except OSError:
        return b"", offset
    return data, offset + len(data)


class ClaudeCodeRuntime:
    name = "claude-code"

    def forget(self, agent_id: str) -> None:
        """The agent ended for good: its HOME (and the session in it) goes."""
        remove_home(agent_id)

    def __init__(
        self, settings: Settings, gateway: ModelGateway, binary: Path, skills_dir: Path | None
    ) -> None:
        self.settings = settings
        self.gateway = gateway
        self.binary = binary
        self.skills_dir = skills_dir
        self.binds = tuple(dict.fromkeys((*claude_binds(binary), *python_binds(sys.executable))))

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
        settings = self.settings
        io_dir, endpoint = await model_endpoint(self.gateway, settings, agent, stack)
        home = await asyncio.to_thread(home_dir, agent.agent_id)  # io_root() touches the disk
        resume = agent.session_id if await asyncio.to_thread(_has_session, home) else None
        skills = await asyncio.to_thread(resolve_skills, self.skills_dir, request.context.skills)
        skills_root = await asyncio.to_thread(_link_skills, home, io_dir, skills)
        if skills_root is not None:
            stack.push_async_callback(asyncio.to_thread, shutil.rmtree, skills_root, True)
        ctx = request.context
        system, prompt = build_prompts(
            agent.agent_type, agent.task_id, ctx.work_items, ctx.skills, ctx.instructions
        )
        if resume:
            prompt = "Continue the task where the previous session stopped.\n\n" + prompt
        argv = claude_argv(
            self.binary,
            prompt,
            system_append=system,
            resume_session=resume,
            max_turns=settings.agent_max_turns,
            model=settings.mosaic_model,
        )
        env = claude_env(
            base_env(), gateway_port=GATEWAY_PORT, token=endpoint.token, home=str(home)
        )
        spec = policy.spec(
            agent.agent_id,
            forwarder_argv(
                sys.executable, forwarder_path(), {GATEWAY_PORT: endpoint.socket_path}, argv
            ),
            worktree=worktree,
            env=env,
            log_dir=agent_dir,
            ro_binds=(*self.binds, forwarder_path(), *((skills_root,) if skills_root else ())),
            rw_binds=(io_dir, home),
        )
        return ClaudeCodeLaunch(spec, role=agent.agent_type.value)


def _has_session(home: Path) -> bool:
    """Whether an earlier attempt left Claude Code's session files in the agent's HOME."""
    projects = home / ".claude" / "projects"
    with contextlib.suppress(OSError):
        return any(p.suffix == ".jsonl" for p in projects.rglob("*.jsonl"))
    return False


def _link_skills(home: Path, io_dir: Path, skills: list[Skill]) -> Path | None:
    """Create HOME (once) and ``~/.claude/skills`` as a link to a read-only copy of the skills
    (bound read-only; the operator's own files are never reachable for writing)."""
    home.mkdir(mode=0o700, exist_ok=True)
    claude_dir = home / ".claude"
    claude_dir.mkdir(mode=0o700, exist_ok=True)
    link = claude_dir / "skills"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    if not skills:
        return None
    root = io_dir.parent / f"{io_dir.name}.skills"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(mode=0o755)
    for skill in skills:
        shutil.copytree(skill.path, root / skill.name, symlinks=True, ignore_dangling_symlinks=True)
    for folder, dirs, files in os.walk(root):  # readable by the sandbox user, writable by no one
        for name in dirs:
            os.chmod(os.path.join(folder, name), 0o555)
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                os.unlink(path)  # a link could point anywhere on the host
            else:
                os.chmod(path, 0o444)
    os.chmod(root, 0o555)
    link.symlink_to(root)
    return root


__all__ = ["ClaudeCodeLaunch", "ClaudeCodeRuntime", "home_dir", "remove_home"]
