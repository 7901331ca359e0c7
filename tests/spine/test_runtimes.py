"""The runtime seam (SPEC §15): MOSAIC_RUNTIME and a spawn's ``runtime`` choose how an agent runs;
an unknown runtime is a 400, a configured one that cannot run a 503 naming what is missing, both
before anything is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.spine.conftest import OrchestratorFactory


def _body(origin: Path, **extra: Any) -> dict[str, Any]:
    return {
        "taskId": "T-rt",
        "agentType": "worker",
        "context": {"repository": str(origin)},
        **extra,
    }


async def test_an_unknown_runtime_is_a_400(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory() as orch:
        status, body = await orch.post("/agents/spawn", _body(origin, runtime="cursor"))
        assert status == 400 and body["error"]["code"] == "invalid_request"
        assert (await orch.get("/agents"))[1]["agents"] == []


async def test_a_runtime_that_cannot_run_is_a_503_naming_what_is_missing(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(
        anthropic_base_url="http://127.0.0.1:9", claude_api_key="sk-ant-test-key",
        mosaic_claude_code="/nonexistent/claude",
    ) as orch:  # fmt: skip
        status, body = await orch.post("/agents/spawn", _body(origin, runtime="claude-code"))
        assert status == 503, body
        assert "/nonexistent/claude" in body["error"]["message"]
        assert "not installed" in body["error"]["message"]
    async with orchestrator_factory(mosaic_agent_command=None) as orch:
        status, body = await orch.post("/agents/spawn", _body(origin, runtime="command"))
        assert status == 503 and "MOSAIC_AGENT_COMMAND" in body["error"]["message"]
        status, body = await orch.post("/agents/spawn", _body(origin))  # default: builtin
        assert status == 503 and "builtin" in body["error"]["message"]
        assert (await orch.get("/agents"))[1]["agents"] == []
        ready_status, ready = await orch.get("/health/ready")
        assert ready_status == 503 and ready["checks"]["model"]["runtime"] == "builtin"


async def test_the_chosen_runtime_is_in_the_status(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_runtime="builtin") as orch:
        # MOSAIC_RUNTIME=builtin without a model, but this spawn asks for the command runtime
        status, body = await orch.post("/agents/spawn", _body(origin, runtime="command"))
        assert status == 202, body
        data = await orch.wait_status(body["agentId"], "completed", "failed")
        assert data["runtime"] == "command"
