"""Every worker push passes through its profile's gates, locally or at the Coordinator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp import web

from tests.conftest import git
from tests.spine.conftest import OrchestratorFactory


def _with_gates(origin: Path, tmp_path: Path, toml: str) -> None:
    seed = tmp_path / "gates-seed"
    git("clone", "-q", str(origin), str(seed))
    (seed / ".mosaic").mkdir()
    (seed / ".mosaic" / "gates.toml").write_text(toml)
    git("add", ".", cwd=seed)
    git("commit", "-qm", "gates", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)


def _branches(origin: Path) -> list[str]:
    return git("--git-dir", str(origin), "for-each-ref", "--format=%(refname:short)").split()


AGENT = "echo 'print(1)' > app.py; echo wrote app"


async def test_failing_gate_fails_the_agent_and_nothing_is_pushed(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    _with_gates(
        origin,
        tmp_path,
        '[gates]\ntypecheck = false\nlint = "true"\ntests = "echo 3 failed >&2; exit 1"\n'
        "coverage = false\n",
    )
    async with orchestrator_factory(mosaic_agent_command=AGENT) as orch:
        agent_id = await orch.spawn("T-gate", origin)
        data = await orch.wait_status(agent_id, "failed", "completed")
    assert data["status"] == "failed"
    assert data["error"].startswith("gates: tests failed")
    gates = {g["name"]: g for g in data["result"]["gates"]}
    assert gates["lint"]["status"] == "passed"
    assert gates["tests"]["status"] == "failed" and "3 failed" in gates["tests"]["output_tail"]
    assert gates["typecheck"]["status"] == "skipped" and gates["typecheck"]["reason"]
    assert "mosaic/worker/T-gate" not in _branches(origin)


async def test_passing_gates_are_recorded_and_the_branch_pushed(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    _with_gates(
        origin,
        tmp_path,
        '[gates]\ntypecheck = "true"\nlint = "true"\ntests = "test -f app.py"\n'
        'coverage = "echo TOTAL 10 1 90%"\n',
    )
    async with orchestrator_factory(mosaic_agent_command=AGENT) as orch:
        agent_id = await orch.spawn("T-ok", origin)
        data = await orch.wait_status(agent_id, "failed", "completed")
    assert data["status"] == "completed", data
    assert [(g["name"], g["status"]) for g in data["result"]["gates"]] == [
        ("typecheck", "passed"),
        ("lint", "passed"),
        ("tests", "passed"),
        ("coverage", "passed"),
    ]
    assert "mosaic/worker/T-ok" in _branches(origin)


@pytest_asyncio.fixture
async def coordinator() -> AsyncIterator[tuple[str, list[dict[str, Any]], dict[str, bool]]]:
    seen: list[dict[str, Any]] = []
    verdict = {"pass": True}

    async def evaluate(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(body)
        results = [
            {"name": g, "passed": verdict["pass"], "durationMs": 5, "output": f"{g} by coordinator"}
            for g in body["gates"]
        ]
        return web.json_response({"results": results})

    app = web.Application()
    app.router.add_post("/gates/evaluate", evaluate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", seen, verdict
    finally:
        await runner.cleanup()


async def test_coordinator_evaluates_the_gates_when_configured(
    orchestrator_factory: OrchestratorFactory,
    origin: Path,
    coordinator: tuple[str, list[dict[str, Any]], dict[str, bool]],
) -> None:
    url, seen, verdict = coordinator
    async with orchestrator_factory(mosaic_agent_command=AGENT, coordinator_url=url) as orch:
        ok = await orch.spawn("T-coord", origin)
        data = await orch.wait_status(ok, "failed", "completed")
        assert data["status"] == "completed", data
        assert {r["phase"] for r in seen} == {"pre", "post"}
        post = next(r for r in seen if r["phase"] == "post")
        assert post["commit"] == data["result"]["commit"] and post["agentId"] == ok
        assert sorted(g for r in seen for g in r["gates"]) == sorted(
            ["typecheck", "lint", "tests", "coverage"]
        )
        verdict["pass"] = False
        bad = await orch.spawn("T-coord-2", origin)
        data = await orch.wait_status(bad, "failed", "completed")
    assert data["status"] == "failed" and data["error"].startswith("gates: ")
    assert "mosaic/worker/T-coord-2" not in _branches(origin)


async def test_tester_pushes_only_when_configured(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    command = "mkdir -p tests && echo 'def test_x(): pass' > tests/test_x.py; echo added a test"
    async with orchestrator_factory(mosaic_agent_command=command) as orch:
        quiet = await orch.spawn("T-tester-1", origin, agentType="tester", gateProfile="custom",
                                 context={"gates": ["lint"]})  # fmt: skip
        data = await orch.wait_status(quiet, "completed", "failed")
    assert data["status"] == "completed", data
    assert data["result"]["pushed"] is False
    async with orchestrator_factory(mosaic_agent_command=command, push_non_workers=True) as orch:
        loud = await orch.spawn("T-tester-2", origin, agentType="tester", gateProfile="custom",
                                context={"gates": ["lint"]})  # fmt: skip
        data = await orch.wait_status(loud, "completed", "failed")
    assert data["status"] == "completed", data
    assert data["result"]["pushed"] is True
    assert "mosaic/tester/T-tester-2" in _branches(origin)
    assert "mosaic/tester/T-tester-1" not in _branches(origin)
