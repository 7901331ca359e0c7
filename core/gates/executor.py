"""``SubprocessExecutor``: runs a gate command with ``sh -c`` on the host, with a timeout that
kills the command's whole process tree.

The command starts in a new session (its own process group). On timeout or cancellation every
descendant (found through ``/proc`` while the shell still lives) and the whole process group get
SIGKILL. When the shell exits normally, what it left behind in its process group (``cmd &``) is
killed as well: a gate leaves no process running. The sandboxed executor the spawner uses
follows the same contract, with a cgroup instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from core.gates.models import CommandResult, Overlay, OverlayUnsupported

log = logging.getLogger(__name__)

_DRAIN_S = 2.0


class _Collector(asyncio.SubprocessProtocol):
    """Keeps the tail of the output and signals process exit and pipe closure separately."""

    def __init__(self, limit: int) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.exited = asyncio.Event()
        self.closed = asyncio.Event()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        self.buffer.extend(data)
        if len(self.buffer) > self.limit:
            del self.buffer[: len(self.buffer) - self.limit]

    def process_exited(self) -> None:
        self.exited.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


class SubprocessExecutor:
    """A plain ``CommandExecutor`` (no sandbox).

    ``env``: the complete environment of the commands (default: this process's).
    ``max_output_bytes``: only the last that many bytes of the output are kept.
    """

    def __init__(
        self, *, env: Mapping[str, str] | None = None, max_output_bytes: int = 256 * 1024
    ) -> None:
        self._env = dict(env) if env is not None else None
        self._max = max_output_bytes

    async def __call__(
        self, command: str, *, cwd: Path, timeout_s: float, overlays: Sequence[Overlay] = ()
    ) -> CommandResult:
        if overlays:
            files = ", ".join(str(dest) for _src, dest in overlays)
            raise OverlayUnsupported(
                f"no sandbox to show the base version of {files} to the gate command"
            )
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_exec(
            lambda: _Collector(self._max),
            "sh",
            "-c",
            command,
            cwd=cwd,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        pid = transport.get_pid()
        timed_out = False
        try:
            try:
                async with asyncio.timeout(timeout_s):
                    await proto.exited.wait()
            except TimeoutError:
                timed_out = True
                await _kill_tree(pid)
                await proto.exited.wait()
                log.warning(
                    "gate command timed out; process tree killed",
                    extra={"command": command, "timeout_s": timeout_s, "pid": pid},
                )
            # Whatever the command left running in its process group goes too.
            _killpg(pid)
            await _drain(proto)
        except BaseException:
            # Cancelled (or failed) while running: leave nothing behind, then re-raise.
            if not proto.exited.is_set():
                await asyncio.shield(_kill_tree(pid))
            else:
                _killpg(pid)
            raise
        finally:
            transport.close()
        exit_code = transport.get_returncode()
        return CommandResult(
            exit_code=exit_code if exit_code is not None else -1,
            output=proto.buffer.decode("utf-8", errors="replace"),
            timed_out=timed_out,
            duration_s=time.monotonic() - started,
        )


async def _drain(proto: _Collector) -> None:
    """Wait for the output to reach EOF; give up when an escaped process still holds the pipe."""
    try:
        await asyncio.wait_for(proto.closed.wait(), _DRAIN_S)
    except TimeoutError:
        log.warning("gate command output still open after exit; an escaped process holds it")


def _killpg(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid``'s descendants (also those that left its process group) and its group."""
    descendants = await asyncio.to_thread(descendants_of, pid)
    _killpg(pid)
    for child in descendants:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)


def descendants_of(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid`` (from ``/proc``; empty where there is none)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields follow the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found
