"""API hardening (SPEC §18) through real HTTP on loopback and the real engine.

What a web page the operator opens can make a browser send (a foreign ``Origin``, a form or
``text/plain`` body, a rebound ``Host``) is refused before it has any effect; what curl, the SDKs
and the attach-mode dashboard send still works; audit records name who was authenticated.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from core.api import serve
from core.api.guard import HostPolicy
from core.engine import Engine
from core.models import AgentStatus
from mosaic_tui.remote import Forbidden, RemoteEngine
from tests.spine.conftest import Orchestrator, make_settings

EVIL = "http://evil.example"
SPAWN = {"taskId": "T-x", "agentType": "worker", "context": {"repository": "/nonexistent"}}


@contextlib.asynccontextmanager
async def hardened(
    tmp_path: Path, valkey_url: str, *, listen: str = "127.0.0.1", **overrides: Any
) -> AsyncIterator[Orchestrator]:
    """An orchestrator whose API gets the allowed hosts and origins from its settings."""
    settings = make_settings(
        tmp_path, valkey_url, mosaic_agent_command="sleep 30", kill_grace_s=0.2, **overrides
    )
    async with (
        Engine.running(settings) as engine,
        serve(
            engine,
            host=listen,
            port=0,
            api_key=settings.orchestrator_api_key,
            max_body_bytes=settings.max_body_bytes,
            allowed_hosts=settings.orchestrator_allowed_hosts,
            allowed_origins=settings.orchestrator_allowed_origins,
        ) as runner,
        aiohttp.ClientSession() as http,
    ):
        port = runner.addresses[0][1]
        yield Orchestrator(engine, settings, f"http://127.0.0.1:{port}", http)


async def raw(
    url: str, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, bytes]:
    """One HTTP/1.1 request with exactly these headers (``curl -X POST URL`` sends no
    Content-Type and no body); the status and body of the answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"{method} {path} HTTP/1.1", "Connection: close"]
    headers = {
        "Host": f"{host}:{port}",
        "User-Agent": "curl/8.5.0",
        "Accept": "*/*",
        **(headers or {}),
    }
    lines += [f"{k}: {v}" for k, v in headers.items() if v is not None]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), payload


async def spawn_running(orch: Orchestrator, origin: Path, task_id: str = "T-live") -> str:
    agent_id = await orch.spawn(task_id, origin)
    await orch.wait_status(agent_id, "running")
    return agent_id


async def audit(redis_client: aioredis.Redis, orch: Orchestrator) -> list[dict[str, Any]]:
    return await orch.engine.store.audit_records()


async def test_cross_site_requests_are_refused_before_any_effect(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path
) -> None:
    async with hardened(tmp_path, valkey_url) as orch:
        live = await spawn_running(orch, origin)
        body = {**SPAWN, "context": {"repository": str(origin)}}
        evil = {"Origin": EVIL}
        # a page's fetch() or form, with the Origin every browser adds to a POST
        for path, payload in (
            ("/agents/spawn", body),
            (f"/agents/{live}/kill", None),
            ("/agents/kill-all", None),
            ("/queue/pause", None),
        ):
            status, answer = await orch.post(path, payload, headers=evil)
            assert status == 403, (path, answer)
            assert answer["error"]["code"] == "forbidden_origin"
            assert "ORCHESTRATOR_ALLOWED_ORIGINS" in answer["error"]["message"]
        # a sandboxed frame or a redirect says Origin: null
        status, _ = await orch.post("/queue/pause", headers={"Origin": "null"})
        assert status == 403
        # what a browser sends without a preflight, even without Origin (old browsers' forms)
        simple = [
            ("/agents/spawn", "text/plain", b'{"taskId": "T-x"}'),
            ("/agents/spawn", "application/x-www-form-urlencoded", b"taskId=T-x"),
            ("/agents/spawn", "multipart/form-data; boundary=x", b"--x--\r\n"),
            ("/agents/spawn", None, b'{"taskId": "T-x"}'),
            ("/agents/kill-all", "application/x-www-form-urlencoded", b""),
            ("/queue/pause", "text/plain", b""),
            (f"/agents/{live}/kill", "multipart/form-data; boundary=x", b""),
        ]
        for path, content_type, payload in simple:
            headers = {"Content-Type": content_type} if content_type else {}
            if not payload:
                headers["Content-Length"] = "0"
            status, answer = await raw(orch.url, "POST", path, headers, payload)
            assert status == 415, (path, content_type, answer)
            assert b"unsupported_media_type" in answer
        # DNS rebinding: the page's own name, now resolving to 127.0.0.1
        for method, path in (
            ("POST", "/queue/pause"),
            ("POST", "/agents/kill-all"),
            ("POST", f"/agents/{live}/kill"),
            ("GET", "/agents"),
            ("GET", "/agents/events"),
            ("GET", "/health"),
        ):
            status, answer = await raw(orch.url, method, path, {"Host": "evil.example:3001"})
            assert status == 403, (method, path, answer)
            assert b"forbidden_host" in answer
        # an EventSource from the page
        status, _ = await orch.get("/agents/events", headers=evil)
        assert status == 403
        # nothing happened
        _, listing = await orch.get("/agents")
        assert [a["agentId"] for a in listing["agents"]] == [live]
        assert listing["agents"][0]["status"] == "running"
        assert live in orch.engine.spawner.live
        _, stats = await orch.get("/queue/stats")
        assert stats["paused"] is False
        assert await audit(redis_client, orch) == []
        await orch.engine.kill_all(who="test")


async def test_same_origin_and_header_less_requests_still_work(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path
) -> None:
    async with hardened(tmp_path, valkey_url) as orch:
        port = orch.url.rsplit(":", 1)[1]
        # curl -X POST http://127.0.0.1:PORT/queue/pause: no Origin, no Content-Type, no body
        status, _ = await raw(orch.url, "POST", "/queue/pause")
        assert status == 200
        assert (await orch.engine.queue_stats()).paused
        # the API's own origin, under each loopback name
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
            status, answer = await raw(
                orch.url, "POST", "/queue/resume", {"Host": host, "Origin": f"http://{host}"}
            )
            assert status == 200, (host, answer)
        # a JSON spawn (aiohttp sends application/json), then kill with aiohttp's empty POST
        # (it says application/octet-stream) and kill-all as curl sends it
        agent_id = await orch.spawn("T-ok", origin)
        await orch.wait_status(agent_id, "running")
        status, killed = await orch.post(f"/agents/{agent_id}/kill")
        assert status == 200 and killed["status"] == "killed"
        live = await spawn_running(orch, origin, "T-ok-2")
        status, answer = await raw(orch.url, "POST", "/agents/kill-all")
        assert status == 200, answer
        assert (await orch.engine.status(live)).status is AgentStatus.KILLED
        status, _ = await raw(
            orch.url,
            "POST",
            "/queue/pause",
            {"Content-Type": "application/json; charset=utf-8", "Content-Length": "0"},
        )
        assert status == 200


async def test_allowed_hosts_and_origins_are_configurable(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis
) -> None:
    async with hardened(
        tmp_path,
        valkey_url,
        orchestrator_allowed_hosts="box.lan",
        orchestrator_allowed_origins="http://localhost:3002",
    ) as orch:
        status, _ = await raw(orch.url, "GET", "/queue/stats", {"Host": "BOX.lan:3001"})
        assert status == 200
        status, _ = await raw(orch.url, "GET", "/queue/stats", {"Host": "other.lan"})
        assert status == 403
        status, _ = await orch.post("/queue/pause", headers={"Origin": "http://localhost:3002"})
        assert status == 200
        status, _ = await orch.post("/queue/resume", headers={"Origin": "http://localhost:3003"})
        assert status == 403


def test_a_wildcard_listen_address_accepts_ip_addresses_but_not_names() -> None:
    wildcard = HostPolicy("0.0.0.0", (), ())
    assert wildcard.host_allowed("10.1.2.3") and wildcard.host_allowed("fe80::1")
    assert not wildcard.host_allowed("evil.example")
    assert wildcard.host_allowed("localhost") and wildcard.host_allowed("127.0.0.5")
    named = HostPolicy("box.lan", ["ci.example"], ())
    assert named.host_allowed("box.lan") and named.host_allowed("ci.example")
    assert not named.host_allowed("10.1.2.3") and not named.host_allowed(None)
    assert HostPolicy("127.0.0.1", ["*"], ()).host_allowed("anything.example")


async def test_audit_records_name_the_principal_not_a_header(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis, origin: Path
) -> None:
    spoofed = {"X-Mosaic-User": "the-operator"}
    async with hardened(tmp_path, valkey_url) as orch:
        agent_id = await spawn_running(orch, origin)
        status, killed = await orch.post(f"/agents/{agent_id}/kill", headers=spoofed)
        assert status == 200
        assert killed["error"] == "killed by anonymous@127.0.0.1"
        records = await audit(redis_client, orch)
        assert [(r["who"], r["what"]) for r in records] == [("anonymous@127.0.0.1", "kill")]
    key = "s3cret-key"
    async with hardened(tmp_path, valkey_url, orchestrator_api_key=key) as orch:
        await redis_client.delete("orchestrator:audit")
        auth = {"Authorization": f"Bearer {key}"}
        status, _ = await orch.post("/agents/kill-all", headers={**spoofed, **auth})
        assert status == 200
        records = await audit(redis_client, orch)
        digest = hashlib.sha256(key.encode()).hexdigest()[:4]
        assert [r["who"] for r in records] == [f"bearer:{digest}@127.0.0.1"]
        assert key not in str(records)


async def test_openapi_describes_the_guard(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis
) -> None:
    async with hardened(tmp_path, valkey_url) as orch:
        _, doc = await orch.get("/openapi.json")
        for path, item in doc["paths"].items():
            for method, operation in item.items():
                assert "403" in operation["responses"], (path, method)
                assert ("415" in operation["responses"]) == (method == "post"), (path, method)
                assert "401" not in operation["responses"]  # no key configured: no 401
        assert doc["security"] == []
        async with orch.http.get(orch.url + "/agents/spawn") as resp:
            assert resp.status == 405 and resp.headers["Allow"] == "POST"
    async with hardened(tmp_path, valkey_url, orchestrator_api_key="k") as orch:
        _, doc = await orch.get("/openapi.json", headers={"Authorization": "Bearer k"})
        assert doc["security"] == [{"bearer": []}]
        assert "401" in doc["paths"]["/agents/spawn"]["post"]["responses"]


async def test_the_attach_client_works_under_a_loopback_name(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis
) -> None:
    async with hardened(tmp_path, valkey_url) as orch:
        port = orch.url.rsplit(":", 1)[1]
        async with RemoteEngine(f"http://localhost:{port}") as remote:
            await remote.pause()
            assert (await remote.queue_stats()).paused
            await remote.resume()
            assert (await remote.kill_all()).total == 0


def _loopback_alias() -> str:
    """A name of this machine (not ``localhost``) that resolves to 127.0.0.1, if there is one."""
    name = socket.gethostname()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET)}
    except OSError:
        addresses = set()
    if name == "localhost" or "127.0.0.1" not in addresses:
        pytest.skip(f"the host name {name!r} does not resolve to 127.0.0.1 here")
    return name


async def test_the_attach_client_shows_a_refused_host_in_one_line(
    tmp_path: Path, valkey_url: str, redis_client: aioredis.Redis
) -> None:
    alias = _loopback_alias()  # what a rebinding name looks like to the server
    async with hardened(tmp_path, valkey_url) as orch:
        port = orch.url.rsplit(":", 1)[1]
        async with RemoteEngine(f"http://{alias}:{port}") as remote:
            with pytest.raises(Forbidden, match="ORCHESTRATOR_ALLOWED_HOSTS"):
                await remote.queue_stats()
    async with hardened(tmp_path, valkey_url, orchestrator_allowed_hosts=alias) as orch:
        port = orch.url.rsplit(":", 1)[1]
        async with RemoteEngine(f"http://{alias}:{port}") as remote:
            assert not (await remote.queue_stats()).paused
