"""The embedded Valkey: private, persistent, recovers from a crash's leftovers."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import psutil
import pytest
import redis.asyncio as aioredis

from core.errors import ConfigError
from core.valkey import EmbeddedValkey, _url_kwargs


async def test_recovers_from_a_stale_socket_and_pidfile(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "v")
    server.data_dir.mkdir()
    server.socket.write_text("stale")  # a crash left these behind
    server.pidfile.write_text("999999\n")
    await server.start()
    try:
        assert await server._ping()
    finally:
        await server.stop()
    assert not server.pidfile.exists() or not psutil.pid_exists(int(server.pidfile.read_text()))


async def test_data_survives_a_killed_server(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "v")
    await server.start()
    client = aioredis.Redis(unix_socket_path=str(server.socket))
    await client.set("k", "v")
    await client.execute_command("BGREWRITEAOF")
    await client.aclose()
    assert server._proc is not None
    await asyncio.sleep(1.2)  # appendfsync everysec
    os.kill(server._proc.pid, signal.SIGKILL)  # crash: no clean shutdown
    await server._proc.wait()
    server._proc = None
    again = EmbeddedValkey(tmp_path / "v")
    await again.start()
    try:
        client = aioredis.Redis(unix_socket_path=str(again.socket))
        assert await client.get("k") == b"v"
        await client.aclose()
    finally:
        await again.stop()


async def test_listens_only_on_a_private_unix_socket(tmp_path: Path) -> None:
    server = EmbeddedValkey(tmp_path / "v")
    await server.start()
    try:
        assert server._proc is not None
        conns = psutil.Process(server._proc.pid).net_connections(kind="inet")
        assert [c for c in conns if c.status == psutil.CONN_LISTEN] == []
        assert oct(server.socket.stat().st_mode & 0o777) == oct(0o700)
    finally:
        await server.stop()


def test_long_state_paths_get_a_short_socket(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    server = EmbeddedValkey(deep)
    assert len(str(server.socket)) < 100


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:6380/2", {"host": "h", "port": 6380, "db": 2}),
        ("rediss://u:p%40ss@h", {"host": "h", "port": 6379, "ssl": True, "username": "u",
                                 "password": "p@ss"}),
        ("unix:///run/v.sock?db=1", {"unix_socket_path": "/run/v.sock", "db": 1}),
    ],
)  # fmt: skip
def test_valkey_urls(url: str, expected: dict[str, object]) -> None:
    assert _url_kwargs(url) == expected


def test_unsupported_url_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="VALKEY_URL"):
        _url_kwargs("http://h")
