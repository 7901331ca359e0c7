"""Fixtures for the egress tests: real servers on loopback, a real proxy on a Unix socket."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from core.models import EventType

# The sandbox fixtures (real bwrap, per-session cgroup parent) for the end-to-end test.
from tests.sandbox.conftest import (  # noqa: F401
    bwrap_sandbox,
    cgroup_parent,
    cgroups_problem,
    needs_cgroups,
    ws,
)


@dataclass
class Events:
    seen: list[tuple[str, EventType, dict[str, Any]]] = field(default_factory=list)

    async def emit(self, agent_id: str, kind: EventType, data: dict[str, Any]) -> None:
        self.seen.append((agent_id, kind, data))

    def of(self, kind: EventType) -> list[dict[str, Any]]:
        return [data for _, k, data in self.seen if k == kind]


@pytest.fixture
def events() -> Events:
    return Events()


@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1 recording what reached it."""

    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@pytest_asyncio.fixture
async def upstream() -> AsyncIterator[Upstream]:
    state = Upstream(0)

    async def record(request: web.Request) -> dict[str, Any]:
        body = await request.read()
        seen = {
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "body": body,
        }
        state.requests.append(seen)
        return seen

    async def hello(request: web.Request) -> web.Response:
        await record(request)
        return web.Response(text="hello from upstream", headers={"X-Upstream": "yes"})

    async def echo(request: web.Request) -> web.Response:
        seen = await record(request)
        return web.Response(body=seen["body"])

    async def stream(request: web.Request) -> web.StreamResponse:
        await record(request)
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first chunk\n")
        await asyncio.wait_for(state.release.wait(), 10)
        await response.write(b"x" * (1 << 20))
        await response.write_eof()
        return response

    app = web.Application(client_max_size=1 << 24)
    app.router.add_get("/hello", hello)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    state.port = sock.getsockname()[1]
    await web.SockSite(runner, sock).start()
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Sends back what it reads, then ``<eof>`` once the client half-closes."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write(b"<eof>")
        await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


@pytest_asyncio.fixture
async def echo_port() -> AsyncIterator[int]:
    """A TCP echo server on 127.0.0.1 (what a CONNECT tunnel reaches)."""

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def free_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def exchange(path: Path, raw: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``raw`` on the proxy socket and read the whole answer (the proxy closes)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


@pytest.fixture
def io_dir() -> Iterator[Path]:
    """An agent I/O directory with a short path (Unix socket paths are limited to ~107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mosaic-net-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
