"""Loopback TCP ports inside a sandbox, forwarded to host-side Unix sockets.

A sandbox has no network (``--unshare-net``: only its own ``lo``). The host-side services an
agent may use (the model gateway, the egress proxy) listen on Unix sockets bound into it; many
clients only speak TCP (``ANTHROPIC_BASE_URL=http://127.0.0.1:<port>``, ``HTTP_PROXY``), so this
script, run *inside* the sandbox in front of the agent, does::

    python -I forwarder.py --forward 127.0.0.1:8081=/io/model.sock \\
        --forward 127.0.0.1:3128=/io/proxy.sock -- <agent argv...>

It binds every listener, forks a server (double fork + ``setsid``: the server is nobody's child
the agent waits for), waits until the server says it is ready, then ``exec``s the agent in its
own process, so the agent keeps the pid, the signals and the exit code the sandbox expects. The
server ends when the agent does: the sandbox's pid namespace ends with the agent, and the server
also watches the agent's pid (a pidfd) so it never outlives it in a sandbox without one.

Each listener serves at most ``--max-connections`` connections at a time (further ones wait in
the kernel's backlog); bytes are relayed with backpressure and half-closes passed on.

Standard library only, and importable alone (it runs under the orchestrator's interpreter
inside the sandbox, where nothing of the orchestrator's packages needs to be visible). The
host-side helpers are :func:`forwarder_path` and :func:`forwarder_argv`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import select
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

MAX_CONNECTIONS = 64
"""Default bound of concurrent connections per listener."""
READY_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
EXIT_SETUP = 125
"""Exit status when the forwarder cannot set up (like ``env``/``timeout``: not the agent's)."""
EXIT_NOT_FOUND = 127


# --- host side ----------------------------------------------------------------------------------
def forwarder_path() -> Path:
    """This script; bind it read-only into the sandbox (it needs nothing else but Python)."""
    return Path(__file__).resolve()


def forwarder_argv(
    python: str,
    script: Path,
    forwards: Mapping[int, Path],
    argv: Sequence[str],
    *,
    max_connections: int | None = None,
) -> list[str]:
    """``python -I script --forward 127.0.0.1:PORT=SOCKET ... -- argv``."""
    out = [python, "-I", str(script)]
    for port, path in sorted(forwards.items()):
        out += ["--forward", f"127.0.0.1:{port}={path}"]
    if max_connections is not None:
        out += ["--max-connections", str(max_connections)]
    return [*out, "--", *argv]


# --- inside the sandbox ----------------------------------------------------------------------
def _forward(text: str) -> tuple[str, int, str]:
    address, sep, path = text.partition("=")
    host, colon, port = address.rpartition(":")
    try:
        loopback = ipaddress.IPv4Address(host).is_loopback
    except ValueError:
        loopback = False
    if not sep or not colon or not loopback:
        raise argparse.ArgumentTypeError(f"{text!r}: expected 127.0.0.1:PORT=/path/to.sock")
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: the port must be from 1 to 65535")
    if not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r}: the socket path must be absolute")
    return host, int(port), path


def _parse(args: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="forwarder.py", description="Forward loopback TCP ports to Unix sockets, run argv."
    )
    parser.add_argument("--forward", type=_forward, action="append", default=[], metavar="FWD")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS)
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    ns = parser.parse_args(args)
    if ns.argv[:1] == ["--"]:
        ns.argv = ns.argv[1:]
    if not ns.argv:
        parser.error("no command to run after --")
    if ns.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    return ns


def _die(message: str, code: int = EXIT_SETUP) -> NoReturn:
    print(f"forwarder: {message}", file=sys.stderr, flush=True)
    os._exit(code)


class _Listener:
    def __init__(self, sock: socket.socket, target: str, limit: int) -> None:
        self.sock = sock
        self.target = target
        self.slots = asyncio.Semaphore(limit)
        self.tasks: set[asyncio.Task[None]] = set()
        self.warned = False

    async def accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.slots.acquire()  # at the bound, new clients wait in the backlog
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError:
                self.slots.release()
                await asyncio.sleep(0.5)
                continue
            task = asyncio.create_task(self._serve(conn))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        self.slots.release()

    async def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            client_r, client_w = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        try:
            up_r, up_w = await asyncio.open_unix_connection(self.target)
        except OSError as exc:
            if not self.warned:
                self.warned = True
                print(f"forwarder: cannot reach {self.target}: {exc}", file=sys.stderr)
            client_w.close()
            return
        pumps = [
            asyncio.create_task(_pump(client_r, up_w)),
            asyncio.create_task(_pump(up_r, client_w)),
        ]
        try:  # both directions to their end, or both down as soon as one fails
            await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            client_w.close()
            up_w.close()


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
    finally:
        if dst.can_write_eof() and not dst.is_closing():
            with contextlib.suppress(OSError):
                dst.write_eof()


def _watch(loop: asyncio.AbstractEventLoop, pid: int, done: asyncio.Future[None]) -> None:
    """Resolve ``done`` when process ``pid`` (the agent) has exited."""

    def finish() -> None:
        if not done.done():
            done.set_result(None)

    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = -1
    if fd >= 0:
        loop.add_reader(fd, finish)
        return

    def poll() -> None:  # no pidfd (old kernel): look once a second
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            finish()
            return
        except PermissionError:
            pass
        loop.call_later(1.0, poll)

    poll()


async def _serve(listeners: list[_Listener], ready_fd: int, agent: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    _watch(loop, agent, done)
    accepting = [asyncio.create_task(lst.accept()) for lst in listeners]
    os.write(ready_fd, b"1")
    os.close(ready_fd)
    await done
    for task in accepting:
        task.cancel()


def _server(
    listeners: list[tuple[socket.socket, str]], ready_fd: int, agent: int, limit: int
) -> None:
    """The grandchild: serve until the agent exits, then leave without running cleanup."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        asyncio.run(_serve([_Listener(s, t, limit) for s, t in listeners], ready_fd, agent))
    except BaseException as exc:  # the server's last words go to stderr
        print(f"forwarder: server stopped: {exc!r}", file=sys.stderr, flush=True)
    finally:
        os._exit(0)


def main(args: Sequence[str] | None = None) -> NoReturn:
    ns = _parse(sys.argv[1:] if args is None else args)
    listeners: list[tuple[socket.socket, str]] = []
    for host, port, path in ns.forward:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(min(ns.max_connections, 128))
            sock.setblocking(False)
        except OSError as exc:
            _die(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        listeners.append((sock, path))
    if listeners:
        _start_server(listeners, ns.max_connections)
    argv: list[str] = ns.argv
    # Python ignores SIGPIPE and SIGXFSZ; an ignored signal stays ignored across exec.
    for name in ("SIGPIPE", "SIGXFSZ"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        _die(f"cannot run {argv[0]!r}: {exc.strerror or exc}", EXIT_NOT_FOUND)


def _start_server(listeners: list[tuple[socket.socket, str]], limit: int) -> None:
    """Fork the server off (double fork), wait for its ready byte, drop our listener copies."""
    agent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        ready_r, ready_w = os.pipe()
        child = os.fork()
    except OSError as exc:
        _die(f"cannot start the forwarding server: {exc.strerror or exc}")
    if child == 0:
        try:
            os.close(ready_r)
            os.setsid()
            if os.fork() == 0:
                _server(listeners, ready_w, agent, limit)
        finally:
            os._exit(0)
    os.close(ready_w)
    os.waitpid(child, 0)
    for sock, _ in listeners:
        sock.close()
    readable, _, _ = select.select([ready_r], [], [], READY_TIMEOUT_S)
    ok = bool(readable) and os.read(ready_r, 1) == b"1"
    os.close(ready_r)
    if not ok:
        _die("the forwarding server did not start")


if __name__ == "__main__":
    main()
