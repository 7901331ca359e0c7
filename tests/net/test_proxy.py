"""The egress proxy on a real Unix socket, in front of real servers on loopback.

``allowed.test`` is mapped to 127.0.0.1 by the test resolver AND listed explicitly, which is
the one way a name that resolves to loopback is let through.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.models import EventType
from core.net import (
    Allowlist,
    EgressError,
    EgressProxy,
    ProxyEndpoint,
    proxy_env,
    system_resolver,
)

from .conftest import Events, Upstream, exchange, free_port

NAMES = {
    "allowed.test": ["127.0.0.1"],
    "api.wild.test": ["127.0.0.1"],
    "mixed.wild.test": ["93.184.215.14", "10.0.0.7"],
    "dead.test": ["127.0.0.1"],
}


async def resolver(name: str) -> list[str]:
    if name not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return NAMES[name]


Serve = Callable[..., Awaitable[tuple[EgressProxy, ProxyEndpoint]]]


@pytest_asyncio.fixture
async def serve(io_dir: Path, events: Events) -> AsyncIterator[Serve]:
    """Start a proxy for agent ``a1`` with the given allowlist; stopped at the end."""
    stack: list[Any] = []

    async def _serve(entries: str, **kw: Any) -> tuple[EgressProxy, ProxyEndpoint]:
        proxy = EgressProxy(Allowlist.parse(entries), events.emit, resolver=resolver, **kw)
        cm = proxy.serve_agent("a1", io_dir)
        endpoint = await cm.__aenter__()
        stack.append(cm)
        return proxy, endpoint

    yield _serve
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def body_of(answer: bytes) -> bytes:
    return answer.split(b"\r\n\r\n", 1)[1]


async def test_a_plain_http_request_to_a_listed_name_is_forwarded_and_published(
    serve: Serve, upstream: Upstream, events: Events
) -> None:
    proxy, endpoint = await serve(f"allowed.test:{upstream.port}")
    request = (
        f"GET http://allowed.test:{upstream.port}/hello?x=1 HTTP/1.1\r\n"
        f"Host: somewhere-else.test\r\nProxy-Connection: keep-alive\r\n"
        "Proxy-Authorization: Basic c2VjcmV0\r\nAccept: text/plain\r\n\r\n"
    ).encode()
    answer = await exchange(endpoint.socket_path, request)
    assert status_of(answer) == 200
    assert body_of(answer) == b"hello from upstream"
    head = answer.split(b"\r\n\r\n")[0].decode().lower()
    assert "connection: close" in head and "x-upstream: yes" in head
    [seen] = upstream.requests
    assert seen["path"] == "/hello?x=1"
    # The upstream sees the URI's host, not what the client claimed, and no proxy headers.
    assert seen["headers"]["Host"] == f"allowed.test:{upstream.port}"
    assert "Proxy-Authorization" not in seen["headers"]
    assert "Proxy-Connection" not in seen["headers"]
    assert seen["headers"]["Accept"] == "text/plain"
    assert events.of(EventType.NET_ALLOWED) == [
        {
            "host": "allowed.test",
            "port": upstream.port,
            "method": "GET",
            "reason": f"listed: allowed.test:{upstream.port}",
        }
    ]
    assert endpoint.counts == {"allowed": 1, "denied": 0}
    assert [agent for agent, _, _ in events.seen] == ["a1"]
    assert proxy.endpoints == {"a1": endpoint}


async def test_request_bodies_stream_through_with_either_framing(
    serve: Serve, upstream: Upstream
) -> None:
    _, endpoint = await serve(f"allowed.test:{upstream.port}")
    url = f"http://allowed.test:{upstream.port}/echo"
    body = os.urandom(300_000)
    sized = f"POST {url} HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    answer = await exchange(endpoint.socket_path, sized)
    assert status_of(answer) == 200 and body_of(answer) == body
    chunked = (
        f"PUT {url} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
        + b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    answer = await exchange(endpoint.socket_path, chunked)
    assert status_of(answer) == 200 and body_of(answer) == b"hello world"
    assert [r["method"] for r in upstream.requests] == ["POST", "PUT"]


async def test_nothing_pipelined_after_a_request_reaches_the_upstream(
    serve: Serve, upstream: Upstream
) -> None:
    _, endpoint = await serve(f"allowed.test:{upstream.port}")
    url = f"http://allowed.test:{upstream.port}"
    first = f"POST {url}/echo HTTP/1.1\r\nContent-Length: 2\r\n\r\nok".encode()
    smuggled = b"GET /hello HTTP/1.1\r\nHost: internal.test\r\n\r\n"
    answer = await exchange(endpoint.socket_path, first + smuggled)
    assert body_of(answer) == b"ok"
    await asyncio.sleep(0.2)
    assert [r["path"] for r in upstream.requests] == ["/echo"]


async def test_the_answer_streams_before_the_upstream_has_finished(
    serve: Serve, upstream: Upstream
) -> None:
    _, endpoint = await serve(f"allowed.test:{upstream.port}")
    reader, writer = await asyncio.open_unix_connection(str(endpoint.socket_path))
    try:
        writer.write(f"GET http://allowed.test:{upstream.port}/stream HTTP/1.1\r\n\r\n".encode())
        received = b""
        while b"first chunk" not in received:  # the upstream holds the rest until released
            received += await asyncio.wait_for(reader.read(4096), 5)
        upstream.release.set()
        rest = await asyncio.wait_for(reader.read(), 10)
        assert (received + rest).count(b"x") == 1 << 20
    finally:
        writer.close()


async def test_connect_tunnels_bytes_both_ways_with_half_close(
    serve: Serve, echo_port: int, events: Events
) -> None:
    _, endpoint = await serve(f"allowed.test:{echo_port}")
    reader, writer = await asyncio.open_unix_connection(str(endpoint.socket_path))
    try:
        writer.write(f"CONNECT allowed.test:{echo_port} HTTP/1.1\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        writer.write(b"ping over the tunnel")
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(20), 5) == b"ping over the tunnel"
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b"<eof>"
    finally:
        writer.close()
    [allowed] = events.of(EventType.NET_ALLOWED)
    assert allowed["method"] == "CONNECT" and allowed["port"] == echo_port


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("unlisted.test:{port}", "unlisted.test is not in SANDBOX_ALLOWED_HOSTS"),
        ("127.0.0.1:{port}", "IP literal 127.0.0.1 is not in SANDBOX_ALLOWED_HOSTS"),
        ("[::ffff:127.0.0.1]:{port}", "IP literal ::ffff:7f00:1 is not in"),
        ("2130706433:{port}", "IP literal 127.0.0.1 is not in"),
        ("allowed.test:22", "port 22 is not allowed for allowed.test"),
        ("api.wild.test:{port}", "api.wild.test resolves to 127.0.0.1, a loopback address"),
        ("mixed.wild.test:{port}", "mixed.wild.test resolves to 10.0.0.7, a private address"),
    ],
)
async def test_denied_attempts_get_403_with_the_reason_and_are_published(
    serve: Serve, upstream: Upstream, events: Events, target: str, reason: str
) -> None:
    port = upstream.port
    _, endpoint = await serve(f"allowed.test:{port}, *.wild.test:{port}")
    for method in ("GET", "CONNECT"):
        where = target.format(port=port)
        line = f"GET http://{where}/hello" if method == "GET" else f"CONNECT {where}"
        answer = await exchange(endpoint.socket_path, f"{line} HTTP/1.1\r\n\r\n".encode())
        assert status_of(answer) == 403
        assert reason in body_of(answer).decode()
        assert body_of(answer).count(b"\n") == 1
    assert upstream.requests == []
    denied = events.of(EventType.NET_DENIED)
    assert [d["method"] for d in denied] == ["GET", "CONNECT"]
    assert all(reason in d["reason"] for d in denied)
    assert endpoint.counts == {"allowed": 0, "denied": 2}
    assert events.of(EventType.NET_ALLOWED) == []


async def test_an_empty_allowlist_refuses_everything(serve: Serve, events: Events) -> None:
    proxy, endpoint = await serve("")
    assert not proxy.enabled
    answer = await exchange(endpoint.socket_path, b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n")
    assert status_of(answer) == 403 and b"SANDBOX_ALLOWED_HOSTS is empty" in answer
    assert endpoint.counts == {"allowed": 0, "denied": 1}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"GET /hello HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "needs an absolute URI"),
        (b"GET https://allowed.test/ HTTP/1.1\r\n\r\n", "use CONNECT for https"),
        (b"CONNECT allowed.test HTTP/1.1\r\n\r\n", "CONNECT needs host:port"),
        (b"hello there friend\r\n\r\n", "not an HTTP/1.x request line"),
        (b"hello\r\n\r\n", "malformed start line"),
        (b"GET http://user@allowed.test/ HTTP/1.1\r\n\r\n", "user information"),
        (b"GET http://allowed.test:99999/ HTTP/1.1\r\n\r\n", "malformed port"),
        (
            b"POST http://allowed.test/echo HTTP/1.1\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            "both Transfer-Encoding and Content-Length",
        ),
        (b"GET http://allowed.test/ HTTP/1.1\r\nBad Header: x\r\n\r\n", "malformed header"),
        (b"GET http://allowed.test/ HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "over"),
    ],
)
async def test_malformed_requests_get_400(
    serve: Serve, events: Events, raw: bytes, reason: str
) -> None:
    _, endpoint = await serve("allowed.test")
    answer = await exchange(endpoint.socket_path, raw)
    assert status_of(answer) == 400
    assert reason in body_of(answer).decode()
    assert endpoint.counts["denied"] == 1


async def test_a_client_that_sends_no_request_in_time_gets_400(serve: Serve) -> None:
    _, endpoint = await serve("allowed.test", head_timeout_s=0.3)
    answer = await exchange(endpoint.socket_path, b"GET http://allowed", timeout=5)
    assert status_of(answer) == 400 and b"no request head in time" in answer


async def test_upstream_failures_get_502(serve: Serve, events: Events) -> None:
    closed = free_port()
    _, endpoint = await serve(f"dead.test:{closed}, nowhere.test")
    answer = await exchange(
        endpoint.socket_path, f"CONNECT dead.test:{closed} HTTP/1.1\r\n\r\n".encode()
    )
    assert status_of(answer) == 502 and b"cannot connect to 127.0.0.1" in answer
    answer = await exchange(endpoint.socket_path, b"GET http://nowhere.test/ HTTP/1.1\r\n\r\n")
    assert status_of(answer) == 502 and b"cannot resolve nowhere.test" in answer
    # The connect was allowed by policy (and published); resolution never got that far.
    assert len(events.of(EventType.NET_ALLOWED)) == 1
    assert events.of(EventType.NET_DENIED) == []


async def test_a_garbage_answer_from_the_upstream_is_a_502(serve: Serve, echo_port: int) -> None:
    _, endpoint = await serve(f"allowed.test:{echo_port}")
    # The echo server answers the forwarded request with the request itself: not a response.
    answer = await exchange(
        endpoint.socket_path, f"GET http://allowed.test:{echo_port}/ HTTP/1.1\r\n\r\n".encode()
    )
    assert status_of(answer) == 502 and b"bad answer from the upstream" in answer


async def test_connections_beyond_the_bound_get_429_without_being_served(
    serve: Serve, echo_port: int, events: Events
) -> None:
    _, endpoint = await serve(f"allowed.test:{echo_port}", max_connections=2)
    tunnels = []
    try:
        for _ in range(2):
            reader, writer = await asyncio.open_unix_connection(str(endpoint.socket_path))
            tunnels.append(writer)
            writer.write(f"CONNECT allowed.test:{echo_port} HTTP/1.1\r\n\r\n".encode())
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert endpoint.active == 2
        for _ in range(5):
            answer = await exchange(endpoint.socket_path, b"")
            assert status_of(answer) == 429 and b"over 2 concurrent connections" in answer
        assert endpoint.active == 2 and len(endpoint._tasks) == 2
        assert endpoint.counts == {"allowed": 2, "denied": 5}
        tunnels.pop().close()
        for _ in range(50):  # the freed slot is usable again
            if endpoint.active < 2:
                break
            await asyncio.sleep(0.02)
        answer = await exchange(
            endpoint.socket_path, f"GET http://allowed.test:{echo_port}/ HTTP/1.1\r\n\r\n".encode()
        )
        assert status_of(answer) != 429
    finally:
        for writer in tunnels:
            writer.close()
    assert len(events.of(EventType.NET_DENIED)) == 5


async def test_an_idle_tunnel_is_closed(serve: Serve, echo_port: int) -> None:
    _, endpoint = await serve(f"allowed.test:{echo_port}", idle_timeout_s=0.3)
    reader, writer = await asyncio.open_unix_connection(str(endpoint.socket_path))
    try:
        writer.write(f"CONNECT allowed.test:{echo_port} HTTP/1.1\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        writer.write(b"x")
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"x"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the proxy
    finally:
        writer.close()
    for _ in range(50):
        if endpoint.active == 0:
            break
        await asyncio.sleep(0.02)
    assert endpoint.active == 0


async def test_a_failing_emit_does_not_break_the_proxy(io_dir: Path, upstream: Upstream) -> None:
    async def broken(agent_id: str, kind: EventType, data: dict[str, Any]) -> None:
        raise RuntimeError("store down")

    proxy = EgressProxy(Allowlist.parse(f"allowed.test:{upstream.port}"), broken, resolver=resolver)
    async with proxy.serve_agent("a1", io_dir) as endpoint:
        request = f"GET http://allowed.test:{upstream.port}/hello HTTP/1.1\r\n\r\n".encode()
        assert status_of(await exchange(endpoint.socket_path, request)) == 200
        assert endpoint.counts == {"allowed": 1, "denied": 0}


async def test_the_socket_is_private_and_removed_after_the_block(
    io_dir: Path, events: Events
) -> None:
    proxy = EgressProxy(Allowlist.parse("pypi.org"), events.emit)
    async with proxy.serve_agent("a1", io_dir) as endpoint:
        assert endpoint.socket_path == io_dir / "proxy.sock"
        mode = os.stat(endpoint.socket_path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        with pytest.raises(EgressError, match="already has a proxy socket"):
            async with proxy.serve_agent("a1", io_dir):
                pass
    assert not (io_dir / "proxy.sock").exists()
    assert proxy.endpoints == {}


async def test_refuses_a_socket_path_that_exists_or_is_too_long(
    io_dir: Path, events: Events
) -> None:
    proxy = EgressProxy(Allowlist.parse("pypi.org"), events.emit)
    (io_dir / "proxy.sock").symlink_to("/etc/passwd")
    with pytest.raises(EgressError, match="already exists"):
        async with proxy.serve_agent("a1", io_dir):
            pass
    with pytest.raises(EgressError, match="too long"):
        async with proxy.serve_agent("a2", io_dir / ("d" * 120)):
            pass
    assert proxy.endpoints == {}


def test_proxy_env_points_every_client_at_the_loopback_port_but_not_loopback() -> None:
    env = proxy_env(3128)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        assert env[name] == "http://127.0.0.1:3128"
    assert env["NO_PROXY"] == env["no_proxy"] == "127.0.0.1,localhost"


async def test_the_default_resolver_is_the_hosts_and_its_answer_is_checked(
    io_dir: Path, upstream: Upstream, events: Events
) -> None:
    assert set(await system_resolver("localhost")) & {"127.0.0.1", "::1"}
    # localhost resolves to loopback, let through because it is listed by name; when ::1 comes
    # first, the proxy falls back to the next checked address (the server is on 127.0.0.1).
    proxy = EgressProxy(Allowlist.parse(f"localhost:{upstream.port}"), events.emit)
    async with proxy.serve_agent("a1", io_dir) as endpoint:
        request = f"GET http://localhost:{upstream.port}/hello HTTP/1.1\r\n\r\n".encode()
        answer = await exchange(endpoint.socket_path, request)
        assert status_of(answer) == 200 and body_of(answer) == b"hello from upstream"
    assert events.of(EventType.NET_ALLOWED)[0]["host"] == "localhost"
