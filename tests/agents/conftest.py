"""Fixtures: the scripted model on loopback, the real gateway in front of it, and a helper that
runs the real runtime script as a subprocess against them (measured by coverage when active)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.agents import (
    ModelGateway,
    PriceTable,
    RuntimeResult,
    Script,
    ScriptedModelServer,
    build_prompts,
    build_runtime_config,
    load_scripts,
    parse_runtime_output,
    runtime_argv,
    runtime_path,
)
from core.models import Usage

# Assembled at run time: the repository holds no key-shaped literal.
REAL_KEY = "sk-ant-" + "test-" + secrets.token_hex(12)


@dataclass
class UsageLog:
    calls: list[tuple[str, Usage]] = field(default_factory=list)

    async def __call__(self, agent_id: str, usage: Usage) -> None:
        self.calls.append((agent_id, usage))


@pytest_asyncio.fixture
async def scripted() -> AsyncIterator[ScriptedModelServer]:
    async with ScriptedModelServer(load_scripts()) as server:
        yield server


@pytest.fixture
def usage_log() -> UsageLog:
    return UsageLog()


@pytest_asyncio.fixture
async def gateway(
    scripted: ScriptedModelServer, usage_log: UsageLog
) -> AsyncIterator[ModelGateway]:
    gw = ModelGateway(scripted.url, REAL_KEY, PriceTable.load(), usage_log)
    try:
        yield gw
    finally:
        await gw.close()


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short path under /tmp (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mosaic-gw-"))
    try:
        yield path / "agent"
    finally:
        shutil.rmtree(path, ignore_errors=True)


def add_script(server: ScriptedModelServer, raw: dict[str, Any]) -> str:
    script = Script.from_dict(raw)
    server.scripts[script.name] = script
    return script.name


@dataclass
class AgentRun:
    returncode: int
    stdout: str
    stderr: str
    workdir: Path
    config_path: Path
    argv: list[str]
    env: dict[str, str]
    transcript: list[dict[str, Any]]

    @property
    def result(self) -> RuntimeResult:
        return parse_runtime_output(self.stdout)

    def records(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.transcript if r["type"] == kind]


def _coverage_prefix() -> list[str]:
    """Run the runtime under ``coverage run -p`` when this test process is being measured."""
    try:
        import coverage
    except ImportError:  # pragma: no cover
        return []
    current = coverage.Coverage.current()
    if current is None:
        return []
    data_file = os.path.abspath(current.config.data_file)
    return [
        "-m",
        "coverage",
        "run",
        "--parallel-mode",
        "--branch",
        f"--data-file={data_file}",
        f"--source={runtime_path().parent}",
    ]


def runtime_command(config_path: Path) -> list[str]:
    argv = runtime_argv(config_path)
    prefix = _coverage_prefix()
    if prefix:
        argv = [argv[0], "-I", *prefix, *argv[2:]]
    return argv


def module_command(module: str, *args: str) -> list[str]:
    """``python -m module args``, under ``coverage run -p`` when this process is measured."""
    prefix = _coverage_prefix()
    if prefix:
        return [sys.executable, *prefix, "-m", module, *args]
    return [sys.executable, "-m", module, *args]


def clean_env(home: Path) -> dict[str, str]:
    """What a spawner passes: an allowlist, never a key."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


async def run_agent(
    gateway: ModelGateway,
    tmp_path: Path,
    socket_dir: Path,
    *,
    script: str,
    role: str = "worker",
    token_budget: int | None = None,
    timeout_s: float = 60.0,
    workdir: Path | None = None,
    **limits: Any,
) -> AgentRun:
    workdir = workdir or tmp_path / "worktree"
    workdir.mkdir(exist_ok=True)
    transcript = tmp_path / "logs" / "transcript.jsonl"
    transcript.parent.mkdir(exist_ok=True)
    system, prompt = build_prompts(role, "TASK-1", ["US-1"], ["python"], f"[script:{script}]")
    async with gateway.serve_agent("agent-1", socket_dir, token_budget) as endpoint:
        config = build_runtime_config(
            agent_id="agent-1",
            role=role,
            system=system,
            prompt=prompt,
            model="scripted-1",
            socket=endpoint.socket_path,
            token=endpoint.token,
            workdir=workdir,
            transcript=transcript,
            **limits,
        )
        config_path = tmp_path / "runtime.json"
        config_path.write_text(json.dumps(config))
        argv = runtime_command(config_path)
        env = clean_env(tmp_path)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=workdir,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    records = (
        [json.loads(line) for line in transcript.read_text().splitlines()]
        if transcript.exists()
        else []
    )
    assert proc.returncode is not None
    return AgentRun(
        proc.returncode, out.decode(), err.decode(), workdir, config_path, argv, env, records
    )


PYTHON = sys.executable
