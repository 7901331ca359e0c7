"""What is left of agents on this host: their processes (by cgroup and environment) and cgroups."""

from __future__ import annotations

import os
from pathlib import Path


def agent_processes(uid: int, agent_ids: set[str]) -> dict[int, str]:
    """Live processes of ``uid`` that belong to these agents: pid -> agent id.

    A process belongs to an agent when it sits in the agent's cgroup (``/proc/<pid>/cgroup``
    names a directory called after the agent) or was started for it (``MOSAIC_AGENT_ID`` in its
    environment, which the agent's command and everything it starts inherit)."""
    found: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) != uid or fields["State"].split()[0] in ("Z", "X"):
                continue
            groups = Path(f"/proc/{pid}/cgroup").read_text()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except (OSError, KeyError, ValueError):
            continue  # gone meanwhile
        for agent_id in agent_ids:
            if f"/{agent_id}\n" in groups or f"MOSAIC_AGENT_ID={agent_id}".encode() in environ:
                found[pid] = agent_id
                break
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
