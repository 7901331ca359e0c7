"""A small HTTP server on aiohttp's low-level ``Server`` (no ``aiohttp.web`` application).

Shared by the model gateway (one Unix socket per agent) and the scripted model (loopback TCP).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse
from aiohttp.web_server import Server

Handler = Callable[[BaseRequest], Awaitable[StreamResponse]]


def error_response(status: int, kind: str, message: str, *, retry: bool = False) -> Response:
    """An Anthropic-style error: ``{"type": "error", "error": {"type", "message"}}``."""
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return Response(
        status=status,
        text=json.dumps(body),
        content_type="application/json",
        headers={"x-should-retry": "true" if retry else "false"},
    )


@dataclass
class RunningServer:
    server: Server
    listener: asyncio.Server

    @property
    def port(self) -> int:
        sock: socket.socket = self.listener.sockets[0]
        port: int = sock.getsockname()[1]
        return port

    async def close(self, grace_s: float = 1.0) -> None:
        """Stop accepting, close idle keep-alive connections, give busy ones ``grace_s``."""
        self.listener.close()
        self.server.pre_shutdown()
        await self.server.shutdown(grace_s)
        await self.listener.wait_closed()


async def serve_unix(handler: Handler, path: Path) -> RunningServer:
    loop = asyncio.get_running_loop()
    server = Server(handler, handler_cancellation=True)
    listener = await loop.create_unix_server(server, str(path))
    return RunningServer(server, listener)


async def serve_tcp(handler: Handler, host: str, port: int) -> RunningServer:
    loop = asyncio.get_running_loop()
    server = Server(handler, handler_cancellation=True)
    listener = await loop.create_server(server, host, port)
    return RunningServer(server, listener)
