"""An agent's private I/O directory: outside the state directory and the worktree.

It holds what a runtime hands its session (config, the model-gateway and proxy sockets, a private
HOME when the runtime keeps one) and what the session leaves (its transcript). It is bound
read-write into the agent's sandbox only, and removed when the attempt ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from core.models import AgentState


def io_root() -> Path:
    """A short path (Unix sockets allow ~100 bytes) that is not under the state directory."""
    for candidate in (Path("/run/mosaic-agents"), Path(tempfile.gettempdir()) / "mosaic-agents"):
        try:
            candidate.mkdir(mode=0o711, parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    raise OSError("no writable directory for agent I/O")


def attempt_name(agent: AgentState, suffix: str = "") -> str:
    """``<agentId>.a<fence>[.suffix]``: the I/O root is shared by the instances of a host, so
    each attempt has its own names (an attempt taken over on the same host never touches the
    other's directories)."""
    return f"{agent.agent_id}.a{agent.fence}" + (f".{suffix}" if suffix else "")


async def fresh_io_dir(name: str, stack: contextlib.AsyncExitStack) -> Path:
    """A new, empty I/O directory ``name`` (see ``attempt_name``), removed when ``stack``
    closes."""
    io_dir = await asyncio.to_thread(io_root) / name
    await asyncio.to_thread(shutil.rmtree, io_dir, True)
    await asyncio.to_thread(io_dir.mkdir, 0o700)
    stack.push_async_callback(asyncio.to_thread, shutil.rmtree, io_dir, True)
    return io_dir


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it may hold the agent's gateway token)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
