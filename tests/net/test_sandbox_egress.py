"""End to end in a real bwrap sandbox (no network, the unprivileged sandbox user).

The agent is ``forwarder.py`` in front of a small Python client; the only way out is the egress
proxy's Unix socket, forwarded to ``127.0.0.1:3128`` of the sandbox's own network namespace and
named by ``HTTP_PROXY``. ``allowed.test`` (listed) is mapped by the test resolver to a loopback
server of the host; everything else is refused, and the host's loopback is not reachable directly.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import psutil

from core.models import EventType
from core.net import Allowlist, EgressProxy, proxy_env
from sandbox.bwrap import BwrapSandbox
from sandbox.forwarder import forwarder_argv, forwarder_path
from tests.sandbox.conftest import PYTHON, Workspace, needs_bwrap

from .conftest import Events, Upstream

pytestmark = needs_bwrap

PROXY_PORT = 3128

CLIENT = r"""
import json, os, socket, sys, urllib.error, urllib.request
upstream_port, echo_port = int(sys.argv[1]), int(sys.argv[2])
out = {"uid": os.getuid()}

def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode()]
    except Exception as e:
        return ["error", repr(e)]

def through_proxy(line):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(line.encode() + b"\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    return data.decode(errors="replace")

out["allowed"] = fetch(f"http://allowed.test:{upstream_port}/hello")
out["unlisted"] = fetch(f"http://unlisted.test:{upstream_port}/hello")
out["literal"] = through_proxy(f"GET http://127.0.0.1:{upstream_port}/hello HTTP/1.1")
try:
    socket.create_connection(("127.0.0.1", upstream_port), timeout=3)
    out["direct"] = "connected"
except OSError as e:
    out["direct"] = type(e).__name__
try:
    socket.create_connection(("93.184.215.14", 80), timeout=3)
    out["outside"] = "connected"
except OSError as e:
    out["outside"] = type(e).__name__
# A tunnel left open when the agent exits: the forwarder must not keep the sandbox alive.
t = socket.create_connection(("127.0.0.1", 3128), timeout=10)
t.sendall(f"CONNECT allowed.test:{echo_port} HTTP/1.1\r\n\r\n".encode())
out["tunnel"] = t.recv(100).decode().split("\r\n")[0]
print(json.dumps(out), flush=True)
"""


def forwarders(marker: Path) -> list[int]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if str(forwarder_path()) in cmdline and any(str(marker) in a for a in cmdline):
            found.append(proc.pid)
    return found


async def test_an_agent_reaches_a_listed_host_through_the_proxy_and_nothing_else(
    ws: Workspace,
    bwrap_sandbox: BwrapSandbox,
    io_dir: Path,
    upstream: Upstream,
    echo_port: int,
    events: Events,
) -> None:
    names = {"allowed.test": ["127.0.0.1"], "unlisted.test": ["127.0.0.1"]}

    async def resolver(name: str) -> list[str]:
        if name not in names:
            raise socket.gaierror(socket.EAI_NONAME, "unknown")
        return names[name]

    proxy = EgressProxy(
        Allowlist.parse(f"allowed.test:{upstream.port}, allowed.test:{echo_port}"),
        events.emit,
        resolver=resolver,
    )
    async with proxy.serve_agent("egress-e2e", io_dir) as endpoint:
        agent = [PYTHON, "-c", CLIENT, str(upstream.port), str(echo_port)]
        spec = ws.spec(
            forwarder_argv(PYTHON, forwarder_path(), {PROXY_PORT: endpoint.socket_path}, agent),
            agent_id="egress-e2e",
            env={"PATH": "/usr/bin:/bin", **proxy_env(PROXY_PORT)},
            ro_binds=(forwarder_path(),),
            rw_binds=(io_dir,),
        )
        proc = await bwrap_sandbox.start(spec)
        try:
            rc = await asyncio.wait_for(proc.wait(), 60)
            # The agent has exited: no forwarder may outlive it (checked before cleanup, which
            # would kill whatever is left in the cgroup anyway).
            for _ in range(60):
                if not forwarders(io_dir):
                    break
                await asyncio.sleep(0.05)
            survivors = forwarders(io_dir)
        finally:
            await proc.cleanup()
        assert rc == 0, ws.stderr()
        assert survivors == []
        out = json.loads(ws.stdout().strip().splitlines()[-1])
        assert out["uid"] != 0
        assert out["allowed"] == [200, "hello from upstream"]
        assert out["unlisted"][0] == 403
        assert "unlisted.test is not in SANDBOX_ALLOWED_HOSTS" in out["unlisted"][1]
        assert out["literal"].startswith("HTTP/1.1 403")
        assert "IP literal 127.0.0.1 is not in SANDBOX_ALLOWED_HOSTS" in out["literal"]
        assert out["direct"] == "ConnectionRefusedError"  # the sandbox's own, empty loopback
        assert out["outside"] in ("OSError", "TimeoutError")  # network unreachable
        assert out["tunnel"] == "HTTP/1.1 200 Connection established"
        assert len(upstream.requests) == 1
        allowed = events.of(EventType.NET_ALLOWED)
        assert [(e["host"], e["method"]) for e in allowed] == [
            ("allowed.test", "GET"),
            ("allowed.test", "CONNECT"),
        ]
        denied = events.of(EventType.NET_DENIED)
        assert [(e["host"], e["port"]) for e in denied] == [
            ("unlisted.test", upstream.port),
            ("127.0.0.1", upstream.port),
        ]
        assert endpoint.counts == {"allowed": 2, "denied": 2}


async def test_the_agents_exit_code_passes_through_the_forwarder(
    ws: Workspace, bwrap_sandbox: BwrapSandbox, io_dir: Path, events: Events
) -> None:
    proxy = EgressProxy(Allowlist.parse("pypi.org"), events.emit)
    async with proxy.serve_agent("egress-rc", io_dir) as endpoint:
        agent = ["/bin/sh", "-c", "echo agent ran; exit 3"]
        spec = ws.spec(
            forwarder_argv(PYTHON, forwarder_path(), {PROXY_PORT: endpoint.socket_path}, agent),
            agent_id="egress-rc",
            ro_binds=(forwarder_path(),),
            rw_binds=(io_dir,),
        )
        proc = await bwrap_sandbox.start(spec)
        try:
            rc = await asyncio.wait_for(proc.wait(), 60)
        finally:
            await proc.cleanup()
    assert rc == 3
    assert ws.stdout().strip() == "agent ran"
