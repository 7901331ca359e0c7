"""``mosaic-orchestrator demo``: the whole flow offline, on a generated repository.

It starts the scripted Messages-API server, creates a sample repository (a bare origin with a
``.mosaic/gates.toml``), and runs four agents through the real engine and sandbox: a worker
that writes and pushes, a worker that leaks a (fake) key and is blocked by the secret scan, a
reviewer that approves, and a slow worker that gets killed. With a terminal it shows them in the
dashboard; with ``--headless`` (or no terminal) it prints the event flow and a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from core.agents import ScriptedModelServer
from core.engine import Engine
from core.engine_api import EngineAPI
from core.models import AgentStatus, Event, SpawnRequest
from core.settings import Settings, load_settings

PLAN = [
    ("DEMO-1", "worker", "worker-hello", AgentStatus.COMPLETED),
    ("DEMO-2", "worker", "leaky-worker", AgentStatus.FAILED),
    ("DEMO-3", "reviewer", "reviewer-approve", AgentStatus.COMPLETED),
    ("DEMO-4", "worker", "slow", AgentStatus.KILLED),
]

GATES_TOML = """\
# Gates of the demo repository (a real project would run its test suite here).
[gates]
typecheck = false
lint = false
tests = "test -s README.md && ls"
coverage = false
"""


def _git(*args: str, cwd: Path | None = None) -> None:
    ident = ["-c", "user.name=Mosaic Demo", "-c", "user.email=demo@mosaic.local"]
    subprocess.run(["git", *ident, *args], cwd=cwd, check=True, capture_output=True)


def make_sample_repository(root: Path) -> Path:
    origin = root / "sample.git"
    _git("init", "-q", "--bare", "-b", "main", str(origin))
    seed = root / "seed"
    _git("clone", "-q", str(origin), str(seed))
    (seed / "README.md").write_text("# Sample project for the Mosaic demo\n")
    (seed / ".mosaic").mkdir()
    (seed / ".mosaic" / "gates.toml").write_text(GATES_TOML)
    _git("add", ".", cwd=seed)
    _git("commit", "-q", "-m", "Sample project", cwd=seed)
    _git("push", "-q", "origin", "HEAD:main", cwd=seed)
    shutil.rmtree(seed)
    return origin


def demo_settings(root: Path, model_url: str, base: Settings) -> Settings:
    backend = base.sandbox_backend if shutil.which("bwrap") else "none"
    return load_settings(
        mosaic_state_dir=root / "state",
        anthropic_base_url=model_url,
        claude_api_key="demo-key-never-leaves-the-orchestrator",
        mosaic_agent_command=None,
        sandbox_backend=backend,
        sandbox_cgroup_parent="mosaic-demo",
        orchestrator_port=0,
        max_concurrent_agents=4,
        orchestrator_queue_concurrency=4,
        kill_grace_s=1.0,
    )


@contextlib.asynccontextmanager
async def demo_engine(base: Settings) -> AsyncIterator[tuple[Engine, Path]]:
    root = Path(tempfile.mkdtemp(prefix="mosaic-demo-"))
    try:
        origin = await asyncio.to_thread(make_sample_repository, root)
        async with (
            ScriptedModelServer() as model,
            Engine.running(demo_settings(root, model.url, base)) as engine,
        ):
            yield engine, origin
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def drive(engine: EngineAPI, origin: Path) -> dict[str, str]:
    """Spawn the plan's agents, kill the slow one once it runs; return task -> agent id."""
    ids: dict[str, str] = {}
    for task_id, agent_type, script, _ in PLAN:
        request = SpawnRequest.model_validate(
            {
                "taskId": task_id,
                "agentType": agent_type,
                "gateProfile": "minimal" if agent_type == "reviewer" else None,
                "context": {
                    "repository": str(origin),
                    "workItems": [f"US-{task_id[-1]}"],
                    "instructions": f"[script:{script}]",
                },
            }
        )
        ids[task_id] = (await engine.spawn(request)).agent_id
    slow = ids["DEMO-4"]
    for _ in range(600):
        if (await engine.status(slow)).status is AgentStatus.RUNNING:
            await asyncio.sleep(1.0)
            await engine.kill(slow, who="demo")
            break
        await asyncio.sleep(0.1)
    return ids


def _line(event: Event, names: dict[str, str]) -> str:
    who = names.get(event.agent_id or "", event.task_id or "")
    detail = event.data.get("error") or event.data.get("gate") or event.data.get("branch") or ""
    return f"{event.timestamp:%H:%M:%S}  {event.type.value:<20} {who:<8} {detail}"


async def run_headless_demo(base: Settings) -> int:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the event flow is the output
    try:
        return await _headless_demo(base)
    finally:
        root.setLevel(level)


async def _headless_demo(base: Settings) -> int:
    async with demo_engine(base) as (engine, origin):
        print(f"demo: sandbox {engine.settings.sandbox_backend}, sample repository {origin}")
        names: dict[str, str] = {}
        stream = engine.events()

        async def follow() -> None:
            async for event in stream:
                print(_line(event, names), flush=True)

        follower = asyncio.create_task(follow())
        ids = await drive(engine, origin)
        names.update({agent_id: task for task, agent_id in ids.items()})
        ok = True
        for _ in range(1200):
            states = [await engine.status(a) for a in ids.values()]
            if all(s.status.final for s in states):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        print("\nsummary:")
        for task_id, _, script, expected in PLAN:
            state = await engine.status(ids[task_id])
            mark = "ok " if state.status is expected else "!! "
            ok = ok and state.status is expected
            why = state.error or state.summary or ""
            print(f"  {mark}{task_id} {script:<17} {state.status.value:<9} {why[:80]}")
        return 0 if ok else 1


async def run_demo(base: Settings, *, headless: bool) -> int:
    if headless or not sys.stdout.isatty():
        return await run_headless_demo(base)
    from mosaic_tui.app import MosaicApp

    async with demo_engine(base) as (engine, origin):
        app = MosaicApp(engine, local=True)
        driver = asyncio.create_task(drive(engine, origin))
        await app.run_async()
        driver.cancel()
        with contextlib.suppress(BaseException):
            await driver
    return 0
