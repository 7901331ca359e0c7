"""The REST API through real HTTP on loopback: success and error answers of every route."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient, TestServer

from core.api import create_app
from tests.spine.conftest import Orchestrator, OrchestratorFactory


async def test_health_is_always_ok(orch: Orchestrator) -> None:
    status, body = await orch.get("/health")
    assert status == 200
    assert body["status"] == "ok" and body["uptime"] >= 0


async def test_ready_reports_valkey_queue_and_sandbox(orch: Orchestrator) -> None:
    status, body = await orch.get("/health/ready")
    assert status == 200, body
    checks = body["checks"]
    assert checks["valkey"]["ok"] and checks["valkey"]["embedded"] is False
    assert checks["queue"]["ok"]
    assert checks["sandbox"]["backend"] == "none"


async def test_spawn_runs_the_agent_command_to_completion(orch: Orchestrator, origin: Path) -> None:
    agent_id = await orch.spawn("T-1", origin)
    data = await orch.wait_status(agent_id, "completed", "failed")
    assert data["status"] == "completed", data
    assert data["taskId"] == "T-1" and data["agentType"] == "worker"
    assert data["summary"] == "done-summary"
    assert data["spawnedAt"] <= data["startedAt"] <= data["completedAt"]
    assert data["branch"] == "mosaic/worker/T-1"
    assert data["result"]["exit_code"] == 0


MALFORMED = [
    (b"{not json", "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b"", "empty"),
]


async def test_malformed_bodies_are_400_with_a_message(orch: Orchestrator) -> None:
    for raw, needle in MALFORMED:
        async with orch.http.post(
            orch.url + "/agents/spawn", data=raw, headers={"Content-Type": "application/json"}
        ) as resp:
            body = await resp.json()
            assert resp.status == 400, body
            assert needle in body["error"]["message"]
            assert body["error"]["code"] == "invalid_request"


async def test_invalid_fields_are_400_and_create_nothing(orch: Orchestrator, origin: Path) -> None:
    base = {"taskId": "T-2", "agentType": "worker", "context": {"repository": str(origin)}}
    cases = [
        ({**base, "taskId": ""}, "taskId"),
        ({**base, "taskId": "-rf"}, "taskId"),
        ({**base, "agentType": "wizard"}, "agentType"),
        ({**base, "gateProfile": "lax"}, "gateProfile"),
        ({**base, "priority": 11}, "priority"),
        ({**base, "priority": 0}, "priority"),
        ({**base, "unknown": 1}, "unknown"),
        ({"agentType": "worker", "context": base["context"]}, "taskId"),
        ({**base, "context": {"repository": "--upload-pack=touch /tmp/pwned"}}, "repository"),
        ({**base, "context": {"repository": "ext::sh -c touch% /tmp/pwned"}}, "repository"),
        ({**base, "context": {"repository": str(origin), "branch": "-main"}}, "branch"),
        ({**base, "context": {"repository": str(origin), "branch": "a..b"}}, "branch"),
        ({**base, "context": {"repository": str(origin), "workItems": "US-1"}}, "workItems"),
    ]
    for body, needle in cases:
        status, answer = await orch.post("/agents/spawn", body)
        assert status == 400, (body, answer)
        text = answer["error"]["message"] + str(answer["error"]["details"])
        assert needle.lower() in text.lower(), (needle, answer)
    status, listing = await orch.get("/agents")
    assert listing["total"] == 0


async def test_body_too_large_is_413(orchestrator_factory: OrchestratorFactory) -> None:
    async with orchestrator_factory(max_body_bytes=2048) as orch:
        body = {"taskId": "T", "agentType": "worker", "context": {"repository": "x" * 5000}}
        status, answer = await orch.post("/agents/spawn", body)
        assert status == 413
        assert answer["error"]["code"] == "body_too_large"


async def test_unknown_agent_is_404(orch: Orchestrator) -> None:
    for method, path in (("get", "/agents/nope/status"), ("post", "/agents/nope/kill")):
        async with orch.http.request(method, orch.url + path) as resp:
            body = await resp.json()
            assert resp.status == 404
            assert body["error"]["code"] == "not_found"
    async with orch.http.get(orch.url + "/no/such/route") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_spawn_is_idempotent_per_task(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command="sleep 30") as orch:
        body = {"taskId": "T-3", "agentType": "worker", "context": {"repository": str(origin)}}
        s1, a1 = await orch.post("/agents/spawn", body)
        s2, a2 = await orch.post("/agents/spawn", body)
        assert s1 == s2 == 202
        assert a1["agentId"] == a2["agentId"] and a2.get("existing") is True
        other = {**body, "agentType": "tester"}
        s3, a3 = await orch.post("/agents/spawn", other)
        assert s3 == 409 and a3["error"]["details"]["agentId"] == a1["agentId"]
        _, listing = await orch.get("/agents")
        assert listing["total"] == 1
        await orch.post("/agents/kill-all")


async def test_list_agents_filters_by_status(orch: Orchestrator, origin: Path) -> None:
    agent_id = await orch.spawn("T-4", origin)
    await orch.wait_status(agent_id, "completed")
    _, done = await orch.get("/agents?status=completed")
    assert [a["agentId"] for a in done["agents"]] == [agent_id]
    _, running = await orch.get("/agents?status=running")
    assert running["agents"] == []
    status, bad = await orch.get("/agents?status=sleeping")
    assert status == 400 and "status must be one of" in bad["error"]["message"]


async def test_api_key_guards_every_route_but_health(
    orchestrator_factory: OrchestratorFactory,
) -> None:
    async with orchestrator_factory(orchestrator_api_key="s3cret-key") as orch:
        assert (await orch.get("/health"))[0] == 200
        for path in ("/health/ready", "/agents", "/queue/stats", "/agents/events", "/openapi.json"):
            async with orch.http.get(orch.url + path) as resp:
                assert resp.status == 401, path
                assert (await resp.json())["error"]["code"] == "unauthorized"
        status, _ = await orch.get("/queue/stats", headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _ = await orch.get("/queue/stats", headers={"Authorization": "Bearer s3cret-key"})
        assert status == 200


async def test_openapi_document_describes_the_routes(orch: Orchestrator) -> None:
    status, doc = await orch.get("/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    for path in ("/agents/spawn", "/agents/{agentId}/status", "/agents/kill-all", "/queue/stats"):
        assert path in doc["paths"]
    spawn = doc["components"]["schemas"]["SpawnRequest"]
    assert {"taskId", "agentType", "context"} <= set(spawn["required"])


async def test_wrong_method_is_405_json(orch: Orchestrator) -> None:
    async with orch.http.get(orch.url + "/agents/spawn") as resp:
        assert resp.status == 405
        assert (await resp.json())["error"]["code"] == "method_not_allowed"


async def test_no_model_and_no_command_refuses_spawn(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command=None) as orch:
        body = {"taskId": "T-5", "agentType": "worker", "context": {"repository": str(origin)}}
        status, answer = await orch.post("/agents/spawn", body)
        assert status == 503, answer
        assert (
            "CLAUDE_API_KEY" in answer["error"]["message"]
            or "MOSAIC_AGENT_COMMAND" in answer["error"]["message"]
        )
        status, ready = await orch.get("/health/ready")
        assert status == 503 and ready["checks"]["model"]["ok"] is False


async def test_client_disconnect_mid_sse_leaves_server_healthy(orch: Orchestrator) -> None:
    async with aiohttp.ClientSession() as s, s.get(orch.url + "/agents/events") as resp:
        assert resp.status == 200
        await resp.content.readline()
    status, _ = await orch.get("/health")
    assert status == 200


async def test_sse_sends_keepalive_comments(orch: Orchestrator) -> None:
    app = create_app(orch.engine, sse_keepalive_s=0.2)
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/agents/events")
        lines = [await resp.content.readline() for _ in range(4)]
        assert b": keep-alive\n" in lines
        resp.close()
