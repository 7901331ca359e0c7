"""Escape suite, network and processes: no route out, nothing outside to see or touch."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .attack import failed, results, script
from .conftest import Workspace, needs_bwrap

pytestmark = needs_bwrap


async def test_no_network_loopback_external_or_dns(ws: Workspace, run: Any, tmp_path: Path) -> None:
    connections = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.close()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    host_sock = tmp_path / "host.sock"
    unix_server = await asyncio.start_unix_server(on_connect, str(host_sock))
    body = f"""
import socket
t("loopback_tcp", lambda: socket.create_connection(("127.0.0.1", {port}), timeout=3).close())
t("external_tcp", lambda: socket.create_connection(("1.1.1.1", 80), timeout=3).close())
t("external_ip6", lambda: socket.create_connection(("2606:4700:4700::1111", 80), timeout=3).close())
t("dns", lambda: socket.getaddrinfo("pypi.org", 443) and "resolved")
def unix():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(3)
    s.connect({str(host_sock)!r})
t("host_unix_socket", unix)
R["interfaces"] = sorted(n for _, n in socket.if_nameindex())
"""
    try:
        rc, _ = await run(ws.py(script(body)))
    finally:
        server.close()
        unix_server.close()
        await server.wait_closed()
        await unix_server.wait_closed()
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    for name in ("loopback_tcp", "external_tcp", "external_ip6", "dns", "host_unix_socket"):
        assert failed(res[name]), (name, res[name])
    assert res["interfaces"] == ["lo"]
    assert connections == 0


@pytest.fixture
def host_process() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def _tracer(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("TracerPid:"):
            return line.split()[1]
    return "?"


async def test_processes_outside_are_invisible_and_untouchable(
    ws: Workspace, run: Any, host_process: subprocess.Popen[bytes]
) -> None:
    target = host_process.pid
    body = f"""
import ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)
t("signal", os.kill, {target}, signal.SIGKILL)
def ptrace():
    if libc.ptrace(16, {target}, 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
t("ptrace", ptrace)
t("ptrace_parent_ns_pid1", lambda: os.kill(1, 0) or "pid 1 is the sandbox's own init")
R["pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
R["cmdlines"] = [open(f"/proc/{{p}}/cmdline").read() for p in R["pids"]]
"""
    rc, _ = await run(ws.py(script(body)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    assert failed(res["signal"]) and failed(res["ptrace"])
    assert target not in res["pids"]
    assert not any("sleep" in c for c in res["cmdlines"])
    assert len(res["pids"]) <= 3  # bwrap's init, python, maybe a child
    assert host_process.poll() is None  # still running
    assert _tracer(target) == "0"


async def test_kill_minus_one_inside_only_kills_the_sandbox(
    ws: Workspace, run: Any, host_process: subprocess.Popen[bytes]
) -> None:
    rc, _ = await run(ws.spec(["/bin/sh", "-c", "kill -9 -1; echo rc=$?"]))
    assert rc == 0
    assert ws.stdout().startswith("rc=")  # it reached only its own pid namespace
    assert host_process.poll() is None


async def test_no_terminal_injection(ws: Workspace, run: Any) -> None:
    body = """
import fcntl, termios
t("dev_tty", lambda: open("/dev/tty", "wb").close())
for fd in (0, 1, 2):
    t(f"tiocsti_fd{fd}", fcntl.ioctl, fd, termios.TIOCSTI, b"x")
master, slave = os.openpty()
t("tiocsti_own_pty", fcntl.ioctl, slave, termios.TIOCSTI, b"x")
"""
    rc, _ = await run(ws.py(script(body)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    for name in ("dev_tty", "tiocsti_fd0", "tiocsti_fd1", "tiocsti_fd2", "tiocsti_own_pty"):
        assert failed(res[name]), (name, res[name])
    assert "Operation not permitted" in res["tiocsti_own_pty"]  # the seccomp filter
