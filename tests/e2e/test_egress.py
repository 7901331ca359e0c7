"""Egress through the allowlist (SPEC §16): an agent in a real bwrap sandbox reaches a listed
host through the orchestrator's filtering proxy, and nothing else; every attempt is an event and
counted in the status. All on loopback: ``localhost`` is listed explicitly (a name resolving to
loopback is refused unless listed); the IP literal ``127.0.0.1`` is not, so it is refused.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from aiohttp import web

from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import OrchestratorFactory

CLIENT = r"""
import json, os, socket, sys, urllib.error, urllib.request
port = int(sys.argv[1])
proxy = os.environ.get("HTTP_PROXY", "")
for name in ("NO_PROXY", "no_proxy"):
    os.environ.pop(name, None)  # the test's targets are loopback names: send them to the proxy
opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
def get(url):
    try:
        with opener.open(url, timeout=10) as r:
            return f"{r.status} {r.read().decode()}"
    except urllib.error.HTTPError as e:
        return str(e.code)
    except Exception as e:
        return f"error {type(e).__name__}"
out = {"proxy": proxy, "allowed": get(f"http://localhost:{port}/hello"),
       "literal": get(f"http://127.0.0.1:{port}/hello"),
       "unlisted": get(f"http://example.invalid:{port}/hello")}
try:
    socket.create_connection(("127.0.0.1", port), timeout=3).close()
    out["direct"] = "connected"
except OSError:
    out["direct"] = "refused"
print(json.dumps(out))
"""


@pytest_asyncio.fixture
async def web_server() -> AsyncIterator[int]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello from the host")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def test_an_agent_reaches_a_listed_host_and_nothing_else(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path, web_server: int
) -> None:
    declare_no_tools(origin, tmp_path)
    tools = tmp_path / "tools"
    tools.mkdir()
    script = tools / "client.py"
    script.write_text(CLIENT)
    script.chmod(0o644)
    for folder in (tools, tmp_path):
        folder.chmod(0o755)
    command = f"{sys.executable} -I {script} {web_server}"
    async with orchestrator_factory(
        mosaic_agent_command=command,
        sandbox_backend="bwrap",
        sandbox_allowed_hosts=f"localhost:{web_server}",
        sandbox_toolchains=str(tools),
    ) as orch:
        agent_id = await orch.spawn("T-egress", origin)
        data = await orch.wait_status(agent_id, "completed", "failed", timeout=60)
        assert data["status"] == "completed", data.get("error")
        seen = json.loads(data["summary"])
        assert seen["proxy"].startswith("http://127.0.0.1:")
        assert seen["allowed"] == "200 hello from the host"
        assert seen["literal"] == "403" and seen["unlisted"] == "403"
        assert seen["direct"] == "refused"  # the sandbox's own loopback: no host network
        assert data["net"] == {"allowed": 1, "denied": 2}
        events = await orch.engine.store.events_after("0-0", 1000)
        net = [e for e in events if e.agent_id == agent_id and e.type.startswith("net.")]
        assert [e.type.value for e in net].count("net.allowed") == 1
        denied = [e.data for e in net if e.type.value == "net.denied"]
        assert {d["host"] for d in denied} == {"127.0.0.1", "example.invalid"}
