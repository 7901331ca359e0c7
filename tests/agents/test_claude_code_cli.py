"""The real Claude Code CLI in a real bwrap sandbox, driven by the scripted model.

The chain is the product's: ``claude`` runs as the sandbox user (uid 64000 under a root
orchestrator) in the worktree, with a private tmpfs HOME and no network but its own loopback;
``ANTHROPIC_BASE_URL`` is a loopback port of the sandbox that ``sandbox/forwarder.py`` relays to
the per-agent gateway socket bound in; the real gateway checks the agent's token (sent by Claude
Code as ``x-api-key``) and forwards to the scripted model on the host's loopback.
Skips only when ``claude`` is not installed (CI installs it: .ci/setup.d/30-claude-code.sh).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from core.agents import ModelGateway, PriceTable, ScriptedModelServer, load_scripts
from core.agents.claude_code import (
    Activity,
    StreamParser,
    claude_argv,
    claude_binds,
    claude_env,
    find_claude,
)
from core.agents.scripts import FAKE_VALUES
from sandbox.base import SandboxSpec
from sandbox.bwrap import BwrapSandbox
from sandbox.cgroups import CgroupManager
from sandbox.forwarder import forwarder_argv, forwarder_path
from sandbox.identity import SANDBOX_HOME
from sandbox.runtime_binds import python_binds
from tests.agents.conftest import REAL_KEY, UsageLog

CLAUDE = find_claude(None)
pytestmark = [
    pytest.mark.skipif(CLAUDE is None, reason="claude is not installed (npm: see .ci/setup.d)"),
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap not installed"),
]
PORT = 8081  # a port of the sandbox's own loopback


@dataclass
class Stack:
    sandbox: BwrapSandbox
    gateway: ModelGateway
    scripted: ScriptedModelServer
    socket_dir: Path


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[Stack]:
    parent = f"mosaic-test-{uuid.uuid4().hex[:10]}"
    problem = CgroupManager(parent).usable()
    if problem is not None:
        pytest.skip(f"cgroups not writable here: {problem}")
    socket_dir = Path(tempfile.mkdtemp(prefix="mosaic-cc-"))
    try:
        async with ScriptedModelServer(load_scripts()) as scripted:
            gateway = ModelGateway(scripted.url, REAL_KEY, PriceTable.load(), UsageLog())
            try:
                yield Stack(BwrapSandbox(cgroup_parent=parent), gateway, scripted, socket_dir)
            finally:
                await gateway.close()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
        CgroupManager(parent).remove_parent()


def _worktree(root: Path) -> Path:
    wt = root / "worktree"
    wt.mkdir(parents=True)
    git = ["git", "-C", str(wt), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git[:3], "init", "-q", "-b", "main"], check=True)
    (wt / "README.md").write_text("base\n")
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "base"], check=True)
    return wt


@dataclass
class Run:
    rc: int
    parser: StreamParser
    activities: list[Activity]
    worktree: Path
    token: str
    stderr: str


async def _run_claude(
    stack: Stack,
    root: Path,
    prompt: str,
    *,
    system: str | None = None,
    home: Path | None = None,
    resume: str | None = None,
) -> Run:
    """One run; ``home``: a host directory bound read-write as HOME (kept across attempts)
    instead of the sandbox's private tmpfs."""
    assert CLAUDE is not None
    worktree = _worktree(root)
    logs = root / "logs"
    agent_id = f"cc-{uuid.uuid4().hex[:8]}"
    async with stack.gateway.serve_agent(agent_id, stack.socket_dir / agent_id, None) as endpoint:
        inner = claude_argv(
            CLAUDE, prompt, system_append=system, resume_session=resume, max_turns=8
        )
        argv = forwarder_argv(sys.executable, forwarder_path(), {PORT: endpoint.socket_path}, inner)
        binds = (*claude_binds(CLAUDE), forwarder_path(), *python_binds(sys.executable))
        spec = SandboxSpec(
            agent_id=agent_id,
            argv=argv,
            workdir=worktree,
            env=claude_env(
                {"PATH": "/usr/bin:/bin", "AWS_SECRET_ACCESS_KEY": "host-secret"},
                gateway_port=PORT,
                token=endpoint.token,
                home=str(home) if home else SANDBOX_HOME,
            ),
            log_dir=logs,
            memory_mb=512,
            pids_max=256,
            ro_binds=tuple(dict.fromkeys(binds)),
            rw_binds=(endpoint.socket_path.parent, *((home,) if home else ())),
        )
        proc = await stack.sandbox.start(spec)
        try:
            rc = await asyncio.wait_for(proc.wait(), 120)
        finally:
            await proc.cleanup()
        usage, token = endpoint.usage, endpoint.token
    parser = StreamParser(cwd=str(worktree))
    activities = parser.feed_bytes((logs / "stdout.log").read_bytes()) + parser.flush()
    assert parser.garbage == 0
    stderr = (logs / "stderr.log").read_text()
    assert usage.input_tokens > 0, stderr[-2000:]  # the model was reached through the gateway
    return Run(rc, parser, activities, worktree, token, stderr)


async def test_claude_code_writes_in_the_worktree_through_the_gateway(
    stack: Stack, tmp_path: Path
) -> None:
    run = await _run_claude(
        stack,
        tmp_path,
        "Task t-1: add a greeting. [script:claude-worker-hello]",
        system="You are a worker agent of the Mosaic orchestrator.",
    )
    assert run.rc == 0, run.stderr[-2000:]
    parser, worktree = run.parser, run.worktree
    assert (worktree / "hello.txt").read_text() == "Hello from Mosaic\n"
    assert run.activities == [
        Activity("Write", "hello.txt"),
        Activity("Bash", "cat hello.txt && ls"),
    ]
    assert parser.result is not None and not parser.result.is_error
    assert parser.result.summary == "Added hello.txt with a greeting and checked it."
    assert parser.result.turns == 3 and parser.result.usage.output_tokens > 0
    assert parser.session_id and parser.session_id == parser.result.session_id
    # Claude Code's own state went to the sandbox's HOME, not into the worktree.
    assert not (worktree / ".claude").exists()
    # What reached the model: streaming requests carrying the gateway's key, never the agent's
    # token (Claude Code sent that as x-api-key to the gateway, which checked it).
    sent = [r for r in stack.scripted.requests if r.path == "/v1/messages"]
    assert len(sent) == 3
    assert all(r.body["stream"] is True for r in sent)
    assert all(r.headers.get("Authorization") == f"Bearer {REAL_KEY}" for r in sent)
    assert all(run.token not in str(r.headers) for r in sent)
    assert (
        "You are a worker agent of the Mosaic orchestrator." in sent[0].body["system"][-1]["text"]
    )
    runtime = parser.runtime_result("worker")
    assert runtime.status == "completed" and runtime.usage.turns == 3


async def test_claude_code_reviewer_verdict_and_a_masked_command(
    stack: Stack, tmp_path: Path
) -> None:
    review = await _run_claude(
        stack, tmp_path / "r", "Review task t-1. [script:claude-reviewer-request-changes]"
    )
    assert review.rc == 0, review.stderr[-2000:]
    assert [a.tool for a in review.activities] == ["Bash"]
    verdict = review.parser.verdict()
    assert verdict is not None and verdict.decision == "request_changes"
    assert verdict.comments == [
        "Add tests for the new function",
        "Remove the TODO left in the code",
    ]
    assert review.parser.runtime_result("reviewer").verdict == verdict
    leaky = await _run_claude(stack, tmp_path / "l", "Configure. [script:claude-leaky-bash]")
    assert leaky.rc == 0, leaky.stderr[-2000:]
    assert [a.tool for a in leaky.activities] == ["Bash"]
    summary = leaky.activities[0].summary
    assert summary.startswith("AWS_SECRET_ACCESS_KEY=") and summary.endswith("echo configured'")
    assert FAKE_VALUES["fake_aws_secret"] not in summary and "****" in summary


async def test_a_retry_resumes_the_session_from_a_kept_home(stack: Stack, tmp_path: Path) -> None:
    """SPEC §15: a retry resumes the session. Claude Code keeps the conversation under
    ``$HOME/.claude/projects/``, so HOME must outlive the attempt: here a per-task host
    directory bound read-write (the sandbox's tmpfs HOME dies with the sandbox). The retry
    runs in another worktree, as a new attempt does."""
    home = tmp_path / "home"
    home.mkdir()
    first = await _run_claude(
        stack, tmp_path / "a1", "Task t-1: add a greeting. [script:claude-worker-hello]", home=home
    )
    assert first.rc == 0, first.stderr[-2000:]
    session = first.parser.session_id
    assert session is not None
    assert list(home.glob(f".claude/projects/*/{session}.jsonl"))
    asked = len(stack.scripted.requests)
    retry = await _run_claude(
        stack, tmp_path / "a2", "Go on with the task.", home=home, resume=session
    )
    assert retry.rc == 0, retry.stderr[-2000:]
    assert retry.parser.session_id == session
    resumed = stack.scripted.requests[asked:]
    assert len(resumed) == 1
    roles = [m["role"] for m in resumed[0].body["messages"]]
    assert roles.count("assistant") == 3  # the first attempt's three turns came back
    # The environment block of the new attempt names its own worktree; the script goes on.
    from core.agents.scripted import request_cwd

    assert request_cwd(resumed[0].body) == str(retry.worktree)
    assert retry.parser.result is not None
    assert retry.parser.result.summary == "Added hello.txt with a greeting and checked it."
