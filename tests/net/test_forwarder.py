"""The in-sandbox forwarder, run as a plain process: it forwards, then *is* the agent."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import pytest_asyncio

from sandbox.forwarder import forwarder_argv, forwarder_path
from tests.net.conftest import echo

PYTHON = sys.executable


@pytest_asyncio.fixture
async def echo_sock(io_dir: Path) -> AsyncIterator[Path]:
    """A Unix echo server (what the gateway or proxy socket stands for)."""
    path = io_dir / "echo.sock"

    server = await asyncio.start_unix_server(echo, str(path))
    try:
        yield path
    finally:
        server.close()
        await server.wait_closed()


def forwarders(marker: Path) -> list[psutil.Process]:
    """Live forwarder processes whose command line names ``marker``."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if str(forwarder_path()) in cmdline and any(str(marker) in a for a in cmdline):
            found.append(proc)
    return found


async def gone(marker: Path, within_s: float = 3.0) -> bool:
    for _ in range(int(within_s / 0.05)):
        if not forwarders(marker):
            return True
        await asyncio.sleep(0.05)
    return False


async def run(argv: list[str], timeout: float = 20.0) -> tuple[int, str, str, int]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode(), proc.pid


CLIENT = """
import json, os, socket, sys
results = {"pid": os.getpid(), "ppid": os.getppid()}
for port in map(int, sys.argv[1:]):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"hello %d" % port)
    s.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    results[str(port)] = data.decode()
print(json.dumps(results))
sys.exit(7)
"""


def test_forwarder_argv_is_python_script_forwards_then_the_agent() -> None:
    argv = forwarder_argv(
        "/py", Path("/f.py"), {9002: Path("/io/b.sock"), 9001: Path("/io/a.sock")}, ["agent", "-x"]
    )
    assert argv == [
        "/py",
        "-I",
        "/f.py",
        "--forward",
        "127.0.0.1:9001=/io/a.sock",
        "--forward",
        "127.0.0.1:9002=/io/b.sock",
        "--",
        "agent",
        "-x",
    ]
    assert forwarder_path().name == "forwarder.py" and forwarder_path().is_file()


async def test_forwards_each_port_and_the_agent_keeps_its_pid_and_exit_code(
    echo_sock: Path, io_dir: Path
) -> None:
    forwards = {29101: echo_sock, 29102: echo_sock}
    argv = forwarder_argv(
        PYTHON, forwarder_path(), forwards, [PYTHON, "-c", CLIENT, "29101", "29102"]
    )
    rc, out, err, pid = await run(argv)
    assert rc == 7, err
    result = json.loads(out)
    assert result["29101"] == "hello 29101<eof>" and result["29102"] == "hello 29102<eof>"
    assert result["pid"] == pid  # exec'd in place: same process
    assert await gone(io_dir)


async def test_signals_reach_the_agent_and_the_server_goes_with_it(
    echo_sock: Path, io_dir: Path
) -> None:
    argv = forwarder_argv(
        PYTHON, forwarder_path(), {29103: echo_sock}, [PYTHON, "-c", "import time; time.sleep(60)"]
    )
    proc = await asyncio.create_subprocess_exec(*argv)
    try:
        for _ in range(100):
            if forwarders(io_dir) and psutil.Process(proc.pid).cmdline()[:2] == [PYTHON, "-c"]:
                break
            await asyncio.sleep(0.05)
        [server] = forwarders(io_dir)
        assert server.pid != proc.pid and server.ppid() != proc.pid  # not the agent's child
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == -signal.SIGTERM
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await gone(io_dir)


async def test_connections_beyond_the_bound_wait_for_a_free_slot(
    echo_sock: Path, io_dir: Path
) -> None:
    client = """
import socket, time
a = socket.create_connection(("127.0.0.1", 29104), timeout=5)
a.sendall(b"a"); assert a.recv(1) == b"a"
b = socket.create_connection(("127.0.0.1", 29104), timeout=5)  # queued in the backlog
b.sendall(b"b"); b.settimeout(0.5)
try:
    b.recv(1); print("served while over the bound")
except socket.timeout:
    print("waited")
a.close()
b.settimeout(5); print(b.recv(1).decode())
"""
    argv = forwarder_argv(
        PYTHON, forwarder_path(), {29104: echo_sock}, [PYTHON, "-c", client], max_connections=1
    )
    rc, out, err, _ = await run(argv)
    assert rc == 0, err
    assert out.split() == ["waited", "b"]
    assert await gone(io_dir)


async def test_an_unreachable_socket_closes_the_client_and_says_so_once(io_dir: Path) -> None:
    client = """
import socket
for _ in range(3):
    s = socket.create_connection(("127.0.0.1", 29105), timeout=5)
    s.sendall(b"x")
    try:
        assert s.recv(10) == b""
    except ConnectionResetError:  # closed with our byte unread
        pass
print("closed")
"""
    argv = forwarder_argv(
        PYTHON, forwarder_path(), {29105: io_dir / "missing.sock"}, [PYTHON, "-c", client]
    )
    rc, out, err, _ = await run(argv)
    assert rc == 0 and out.strip() == "closed"
    assert err.count("cannot reach") == 1


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--forward", "0.0.0.0:1=/a.sock", "--", "true"], "expected 127.0.0.1:PORT", 2),
        (["--forward", "127.0.0.1:0=/a.sock", "--", "true"], "port must be from 1 to 65535", 2),
        (["--forward", "127.0.0.1:1=rel.sock", "--", "true"], "must be absolute", 2),
        (["--forward", "127.0.0.1:29106=/a.sock"], "no command to run", 2),
        (["--", "/nonexistent/agent"], "cannot run '/nonexistent/agent'", 127),
    ],
)
async def test_bad_arguments_are_refused_with_a_message(
    args: list[str], message: str, code: int
) -> None:
    rc, _, err, _ = await run([PYTHON, "-I", str(forwarder_path()), *args])
    assert rc == code
    assert message in err


async def test_a_port_in_use_is_a_setup_failure(echo_sock: Path) -> None:
    blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 29107)
    try:
        argv = forwarder_argv(PYTHON, forwarder_path(), {29107: echo_sock}, ["true"])
        rc, _, err, _ = await run(argv)
    finally:
        blocker.close()
        await blocker.wait_closed()
    assert rc == 125 and "cannot listen on 127.0.0.1:29107" in err


async def test_the_agent_starts_with_default_signal_dispositions(echo_sock: Path) -> None:
    """Python ignores SIGPIPE; the agent must not inherit that (``yes | head`` must work)."""
    show = ["/bin/sh", "-c", "grep SigIgn /proc/$$/status"]
    _, direct, _, _ = await run(show)
    argv = forwarder_argv(PYTHON, forwarder_path(), {29108: echo_sock}, show)
    rc, forwarded, err, _ = await run(argv)
    assert rc == 0, err
    assert forwarded == direct


async def test_bulk_bytes_both_ways_arrive_intact(echo_sock: Path, io_dir: Path) -> None:
    """32 MiB sent while the echo comes back: backpressure on both sides, nothing lost."""
    client = """
import hashlib, os, socket, threading
data = os.urandom(1 << 20) * 32
s = socket.create_connection(("127.0.0.1", 29109), timeout=30)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=send).start()
got = hashlib.sha256()
n = 0
while chunk := s.recv(1 << 16):
    got.update(chunk)
    n += len(chunk)
print(n, got.hexdigest() == hashlib.sha256(data + b"<eof>").hexdigest())
"""
    argv = forwarder_argv(PYTHON, forwarder_path(), {29109: echo_sock}, [PYTHON, "-c", client])
    rc, out, err, _ = await run(argv, timeout=60)
    assert rc == 0, err
    assert out.split() == [str((32 << 20) + 5), "True"]
    assert await gone(io_dir)


async def test_out_of_descriptors_the_server_pauses_instead_of_spinning(
    echo_sock: Path, io_dir: Path
) -> None:
    """With few descriptors left, a client waits (the listener pauses) and the server stays
    idle meanwhile; it is served once a descriptor is free again."""
    client = """
import resource, socket, sys, time
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
conns = []
for i in range(2):
    s = socket.create_connection(("127.0.0.1", 29110), timeout=5)
    s.sendall(b"%d" % i); assert s.recv(1) == b"%d" % i
    conns.append(s)
late = socket.create_connection(("127.0.0.1", 29110), timeout=5)  # no descriptor for it yet
late.sendall(b"L"); late.settimeout(1.0)
try:
    late.recv(1); print("served")
except socket.timeout:
    print("waited")
print("ready", flush=True)
sys.stdin.readline()  # the test measures the server's CPU meanwhile
conns.pop().close()
late.settimeout(5); print(late.recv(1).decode())
"""
    argv = forwarder_argv(PYTHON, forwarder_path(), {29110: echo_sock}, [PYTHON, "-c", client])

    def few_descriptors() -> None:
        import resource

        resource.setrlimit(
            resource.RLIMIT_NOFILE, (10, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )

    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=few_descriptors,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        lines = [await asyncio.wait_for(proc.stdout.readline(), 10) for _ in range(2)]
        assert lines == [b"waited\n", b"ready\n"]
        [server] = [psutil.Process(p.pid) for p in forwarders(io_dir)]
        before = sum(server.cpu_times()[:2])
        await asyncio.sleep(1.0)
        assert sum(server.cpu_times()[:2]) - before < 0.1  # paused, not spinning
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        assert await asyncio.wait_for(proc.stdout.readline(), 10) == b"L\n"
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await gone(io_dir)
