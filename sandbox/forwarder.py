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
the kernel's backlog); bytes are relayed with backpressure and half-closes passed on, by one
thread on a ``selectors`` loop (no asyncio: the server costs ~7 MiB and the agent's start ~20 ms).

Standard library only, and importable alone (it runs under the orchestrator's interpreter
inside the sandbox, where nothing of the orchestrator's packages needs to be visible). The
host-side helpers are :func:`forwarder_path` and :func:`forwarder_argv`.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import select
import selectors
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NoReturn

MAX_CONNECTIONS = 64
"""Default bound of concurrent connections per listener."""
READY_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
PAUSE_S = 0.5
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


class _Pipe:
    """One direction of a connection: what was read from ``src`` and not yet written to ``dst``."""

    __slots__ = ("dst", "eof", "pending", "src")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src = src
        self.dst = dst
        self.pending = b""
        self.eof = False

    @property
    def done(self) -> bool:
        return self.eof and not self.pending


class _Conn:
    """A client's TCP connection and its Unix-socket twin, relayed both ways."""

    def __init__(self, server: _Server, listener: _Listener, a: socket.socket, b: socket.socket):
        self.server = server
        self.listener = listener
        self.pipes = (_Pipe(a, b), _Pipe(b, a))
        self.closed = False
        for sock in (a, b):
            server.selector.register(sock, selectors.EVENT_READ, self._event)

    def _event(self, sock: socket.socket, mask: int) -> None:
        try:
            if mask & selectors.EVENT_WRITE:
                self._flush(self.pipes[1] if sock is self.pipes[0].src else self.pipes[0])
            if mask & selectors.EVENT_READ:
                self._read(self.pipes[0] if sock is self.pipes[0].src else self.pipes[1])
        except OSError:
            self.close()
            return
        if self.pipes[0].done and self.pipes[1].done:
            self.close()
        elif not self.closed:
            self._interest()

    def _read(self, pipe: _Pipe) -> None:
        if pipe.eof or pipe.pending:
            return
        try:
            data = pipe.src.recv(CHUNK)
        except BlockingIOError:
            return
        if not data:
            pipe.eof = True
        pipe.pending = data
        self._flush(pipe)

    def _flush(self, pipe: _Pipe) -> None:
        if pipe.pending:
            try:
                sent = pipe.dst.send(pipe.pending)
            except BlockingIOError:
                sent = 0
            pipe.pending = pipe.pending[sent:]
        if pipe.done:
            with contextlib.suppress(OSError):  # pass the half-close on
                pipe.dst.shutdown(socket.SHUT_WR)

    def _interest(self) -> None:
        """Read a side only once what it sent is written out (backpressure); watch it for
        writing only while something waits for it. A side with neither is not watched."""
        for out, into in ((self.pipes[0], self.pipes[1]), (self.pipes[1], self.pipes[0])):
            events = 0 if out.eof or out.pending else selectors.EVENT_READ
            events |= selectors.EVENT_WRITE if into.pending else 0
            key = self.server.selector.get_map().get(out.src)
            if not events:
                if key is not None:
                    self.server.selector.unregister(out.src)
            elif key is None:
                self.server.selector.register(out.src, events, self._event)
            elif key.events != events:
                self.server.selector.modify(out.src, events, self._event)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for pipe in self.pipes:
            with contextlib.suppress(KeyError, ValueError):
                self.server.selector.unregister(pipe.src)
            pipe.src.close()
        self.listener.release()


class _Listener:
    def __init__(self, server: _Server, sock: socket.socket, target: str, limit: int) -> None:
        self.server = server
        self.sock = sock
        self.target = target
        self.limit = limit
        self.active = 0
        self.warned = False
        self.accepting = True
        server.selector.register(sock, selectors.EVENT_READ, self._accept)

    def _accept(self, _sock: socket.socket, _mask: int) -> None:
        while self.active < self.limit:
            try:
                client, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError:  # e.g. EMFILE
                self._pause()
                return
            client.setblocking(False)
            with contextlib.suppress(OSError):
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            except OSError:
                client.close()
                self._pause()
                return
            try:
                upstream.setblocking(False)
                upstream.connect(self.target)
            except OSError as exc:
                if not self.warned:
                    self.warned = True
                    print(f"forwarder: cannot reach {self.target}: {exc}", file=sys.stderr)
                upstream.close()
                client.close()
                continue
            self.active += 1
            _Conn(self.server, self, client, upstream)
        # At the bound: stop accepting; new clients wait in the kernel's backlog.
        self.server.selector.unregister(self.sock)
        self.accepting = False

    def _pause(self) -> None:
        """Out of descriptors: stop accepting for ``PAUSE_S`` rather than spin on the listener."""
        self.server.selector.unregister(self.sock)
        self.accepting = False
        self.server.paused.append(self)
        self.server.resume_at = time.monotonic() + PAUSE_S

    def release(self) -> None:
        self.active -= 1
        self.resume()

    def resume(self) -> None:
        if not self.accepting and self.active < self.limit and self not in self.server.paused:
            self.server.selector.register(self.sock, selectors.EVENT_READ, self._accept)
            self.accepting = True


class _Server:
    """A single-threaded ``selectors`` loop: listeners, connections and the agent's pidfd."""

    def __init__(self, agent: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.running = True
        self.paused: list[_Listener] = []
        """Listeners whose accept failed (out of descriptors), resumed at ``resume_at``."""
        self.resume_at = 0.0
        self.agent = agent
        try:
            self.pidfd = os.pidfd_open(agent)
        except (AttributeError, OSError):
            self.pidfd = -1  # no pidfd (old kernel): look once a second
        if self.pidfd >= 0:
            self.selector.register(self.pidfd, selectors.EVENT_READ, self._agent_exited)

    def _agent_exited(self, _fd: int, _mask: int) -> None:
        self.running = False

    def _agent_alive(self) -> bool:
        try:
            os.kill(self.agent, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True

    def run(self) -> None:
        polling = self.pidfd < 0
        while self.running:
            timeout = 1.0 if polling else None
            if self.paused:
                timeout = max(0.0, min(timeout or PAUSE_S, self.resume_at - time.monotonic()))
            for key, mask in self.selector.select(timeout):
                key.data(key.fileobj, mask)
            if polling and not self._agent_alive():
                return
            if self.paused and time.monotonic() >= self.resume_at:
                paused, self.paused = self.paused, []
                for listener in paused:
                    listener.resume()


def _server(
    listeners: list[tuple[socket.socket, str]], ready_fd: int, agent: int, limit: int
) -> None:
    """The grandchild: serve until the agent exits, then leave without running cleanup."""
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        server = _Server(agent)
        for sock, target in listeners:
            _Listener(server, sock, target, limit)
        os.write(ready_fd, b"1")
        os.close(ready_fd)
        server.run()
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
