"""The filtering egress proxy: the only way out of a sandbox (SPEC §16 "Egress allowlist").

One proxy per orchestrator; each agent gets its own Unix socket ``<io_dir>/proxy.sock`` (mode
0600; the sandbox backend hands the agent's I/O directory to the sandbox user), which the
in-sandbox forwarder (``sandbox/forwarder.py``) exposes as ``127.0.0.1:<port>`` and the agent
sees as ``HTTP_PROXY``/``HTTPS_PROXY`` (:func:`proxy_env`). It speaks HTTP proxy:

- ``CONNECT host:port``: a byte tunnel (HTTPS, end to end; the proxy never sees inside);
- ``GET http://host/path`` (any method, absolute URI): the request is forwarded with
  ``Connection: close`` and both bodies streamed, never buffered whole.

Each attempt is checked (:class:`~core.net.allowlist.Allowlist`: name and port, then every
resolved address), published as ``net.allowed`` / ``net.denied`` through ``emit`` and counted on
the agent's :class:`ProxyEndpoint`. The proxy connects to an address it checked (no second
resolution). Refusals: 403 (policy), 400 (malformed), 429 (over the per-agent connection bound:
the socket is answered and closed from the accept loop, so no task is ever created beyond the
bound), 502/504 (resolution or upstream failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.models import EventType
from core.net.allowlist import Allowlist, IPAddress, address_problem
from core.net.errors import EgressError
from core.net.httphead import (
    MAX_HEAD,
    Malformed,
    body_framing,
    error_answer,
    parse_request,
    read_head,
)
from core.net.relay import Idle, relay_request, tunnel

log = logging.getLogger(__name__)

SOCKET_NAME = "proxy.sock"
MAX_UNIX_PATH = 107
NO_PROXY = "127.0.0.1,localhost"

Emit = Callable[[str, EventType, dict[str, Any]], Awaitable[None]]
Resolver = Callable[[str], Awaitable[list[str]]]


async def system_resolver(host: str) -> list[str]:
    """The host's resolver (the loop's ``getaddrinfo``), addresses in its order, unique."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def proxy_env(port: int) -> dict[str, str]:
    """The sandbox environment that sends HTTP(S) through the proxy's loopback port.

    ``NO_PROXY`` keeps loopback (the model gateway's port) off the proxy.
    """
    url = f"http://127.0.0.1:{port}"
    env = {name: url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return {**env, "NO_PROXY": NO_PROXY, "no_proxy": NO_PROXY}


@dataclass
class ProxyEndpoint:
    """One agent's proxy socket and what it let through."""

    agent_id: str
    socket_path: Path
    allowed: int = 0
    denied: int = 0
    active: int = 0
    """Connections being served now."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    @property
    def counts(self) -> dict[str, int]:
        """What the status shows as ``net``."""
        return {"allowed": self.allowed, "denied": self.denied}


class _Refused(Exception):
    def __init__(self, status: int, reason: str, *, policy: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.policy = policy
        """A policy refusal (counted and published as ``net.denied``), not an upstream failure."""


class EgressProxy:
    def __init__(
        self,
        allowlist: Allowlist,
        emit: Emit,
        *,
        resolver: Resolver | None = None,
        max_connections: int = 32,
        connect_timeout_s: float = 10.0,
        idle_timeout_s: float = 300.0,
        head_timeout_s: float = 30.0,
    ) -> None:
        if max_connections < 1:
            raise EgressError("max_connections must be at least 1")
        self.allowlist = allowlist
        self.emit = emit
        self.resolver: Resolver = resolver or system_resolver
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.head_timeout_s = head_timeout_s
        self._endpoints: dict[str, ProxyEndpoint] = {}

    def __repr__(self) -> str:
        return f"EgressProxy({self.allowlist!r}, agents={len(self._endpoints)})"

    @property
    def enabled(self) -> bool:
        """False when the allowlist is empty: no egress at all (the proxy need not be served)."""
        return bool(self.allowlist)

    @property
    def endpoints(self) -> dict[str, ProxyEndpoint]:
        return dict(self._endpoints)

    @contextlib.asynccontextmanager
    async def serve_agent(self, agent_id: str, io_dir: Path) -> AsyncIterator[ProxyEndpoint]:
        """Serve one agent on ``io_dir/proxy.sock`` for the duration of the block."""
        if agent_id in self._endpoints:
            raise EgressError(f"agent {agent_id} already has a proxy socket")
        path = Path(io_dir) / SOCKET_NAME
        if len(str(path).encode()) > MAX_UNIX_PATH:
            raise EgressError(f"proxy socket path is too long for a Unix socket: {path}")
        if path.exists() or path.is_symlink():
            raise EgressError(f"proxy socket {path} already exists (it belongs to another agent)")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(path))
            os.chmod(path, 0o600)
            listener.listen(min(self.max_connections, 128))
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            raise EgressError(f"cannot listen on proxy socket {path}: {exc.strerror}") from None
        endpoint = ProxyEndpoint(agent_id, path)
        self._endpoints[agent_id] = endpoint
        accepting = asyncio.create_task(self._accept(endpoint, listener))
        try:
            log.debug("egress proxy serving agent %s on %s", agent_id, path)
            yield endpoint
        finally:
            self._endpoints.pop(agent_id, None)
            accepting.cancel()
            for task in list(endpoint._tasks):
                task.cancel()
            await asyncio.gather(accepting, *endpoint._tasks, return_exceptions=True)
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            log.debug("egress proxy socket of agent %s closed", agent_id)

    async def _accept(self, endpoint: ProxyEndpoint, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. EMFILE: back off instead of spinning
                log.warning("egress proxy: accept failed for %s: %s", endpoint.agent_id, exc)
                await asyncio.sleep(0.5)
                continue
            if endpoint.active >= self.max_connections:
                reason = f"over {self.max_connections} concurrent connections for this agent"
                with contextlib.suppress(OSError):
                    conn.setblocking(False)
                    conn.send(error_answer(429, reason, retry_after=1))
                conn.close()
                await self._publish(endpoint, False, "", 0, "", reason)
                continue
            endpoint.active += 1
            task = asyncio.create_task(self._serve(endpoint, conn))
            endpoint._tasks.add(task)
            task.add_done_callback(lambda t: _done(endpoint, t))

    async def _publish(
        self, endpoint: ProxyEndpoint, allowed: bool, host: str, port: int, method: str, why: str
    ) -> None:
        if allowed:
            endpoint.allowed += 1
        else:
            endpoint.denied += 1
            log.info(
                "egress denied for agent %s: %s:%s %s",
                endpoint.agent_id,
                host,
                port,
                why,
                extra={"agent_id": endpoint.agent_id},
            )
        kind = EventType.NET_ALLOWED if allowed else EventType.NET_DENIED
        data = {"host": host, "port": port, "method": method, "reason": why}
        try:
            await self.emit(endpoint.agent_id, kind, data)
        except Exception:
            log.exception("egress proxy: emit failed for agent %s", endpoint.agent_id)

    async def _serve(self, endpoint: ProxyEndpoint, conn: socket.socket) -> None:
        reader, writer = await asyncio.open_unix_connection(sock=conn, limit=MAX_HEAD)
        host, port, method = "", 0, ""
        try:
            try:
                async with asyncio.timeout(self.head_timeout_s):
                    raw = await read_head(reader)
                if raw is None:
                    return
                head, target = parse_request(raw)
                host, port, method = target.host, target.port, head.start[0]
                framing = None if method == "CONNECT" else body_framing(head)
                addresses, why = await self._check(target.host, target.port)
            except (Malformed, TimeoutError) as exc:
                reason = str(exc) if isinstance(exc, Malformed) else "no request head in time"
                raise _Refused(400, f"malformed proxy request: {reason}") from None
            await self._publish(endpoint, True, host, port, method, why)
            upstream = await self._connect(addresses, target.port)
            idle = Idle(self.idle_timeout_s)
            try:
                if method == "CONNECT":
                    writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    await writer.drain()
                    await tunnel(reader, writer, *upstream, idle)
                else:
                    await relay_request(head, target, framing, reader, writer, *upstream, idle)
            finally:
                upstream[1].close()
        except _Refused as refused:
            if refused.policy:
                await self._publish(endpoint, False, host, port, method, refused.reason)
            else:
                log.info("egress for agent %s: %s", endpoint.agent_id, refused.reason)
            with contextlib.suppress(OSError, RuntimeError):
                writer.write(error_answer(refused.status, refused.reason))
                await writer.drain()
        except (OSError, TimeoutError, Malformed) as exc:
            log.debug("egress connection of %s ended: %r", endpoint.agent_id, exc)
        finally:
            writer.close()

    async def _check(self, host: str, port: int) -> tuple[list[IPAddress], str]:
        """The checked addresses to connect to and why they are allowed, or ``_Refused``."""
        verdict = self.allowlist.check(host, port)
        if not verdict.allowed:
            raise _Refused(403, verdict.reason)
        if verdict.literal is not None:
            return [verdict.literal], verdict.reason
        name = host.lower().rstrip(".")
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                found = await self.resolver(name)
        except (OSError, TimeoutError) as exc:
            raise _Refused(502, f"cannot resolve {name}: {exc}", policy=False) from None
        addresses: list[IPAddress] = []
        for text in found:
            with contextlib.suppress(ValueError):
                addresses.append(ipaddress.ip_address(text.split("%")[0]))
        if not addresses:
            raise _Refused(502, f"{name} has no address", policy=False)
        if not verdict.explicit:
            for address in addresses:
                if problem := address_problem(address):
                    raise _Refused(
                        403, f"{name} resolves to {address}, {problem} (list {name} to allow it)"
                    )
        return addresses, verdict.reason

    async def _connect(
        self, addresses: list[IPAddress], port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the first of ``addresses`` (all checked) that answers, in order."""
        problem = ""
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                for address in addresses:
                    try:
                        return await asyncio.open_connection(str(address), port, limit=MAX_HEAD)
                    except OSError as exc:
                        problem = f"cannot connect to {address}:{port}: {exc.strerror or exc}"
        except TimeoutError:
            problem = f"connecting to {addresses[0]}:{port} timed out"
            raise _Refused(504, problem, policy=False) from None
        raise _Refused(502, problem, policy=False)


def _done(endpoint: ProxyEndpoint, task: asyncio.Task[None]) -> None:
    endpoint._tasks.discard(task)
    endpoint.active -= 1
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("egress proxy: connection handler failed", exc_info=exc)
