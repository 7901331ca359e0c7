"""Per-agent control groups: memory, CPU and pids limits, stats, kill-the-whole-group.

cgroup v2 is used when the unified hierarchy has the ``memory`` and ``pids`` controllers; otherwise
the v1 hierarchies (``memory``, ``pids``, ``cpu``, ``cpuacct``, ``freezer``; co-mounted or not) are
used. An agent's cgroup is ``<hierarchy>/<parent>/<agent_id>`` in each hierarchy, so reconciliation
finds leftovers by listing ``<parent>``.

A process enters its cgroup *before it execs* its payload: :meth:`AgentCgroup.entry_files` lists the
files the launcher writes itself into (see :mod:`sandbox.launcher`). On v1 these are the ``tasks``
files, written with ``0`` ("the calling thread"): the kernel then moves the (single-threaded)
launcher without taking the global threadgroup lock, whose write side waits for an RCU grace
period (about 10 ms per start, measured here, when writing a pid to ``cgroup.procs``).

Everything here is synchronous file I/O on cgroupfs. Async callers run the calls that wait
(:meth:`AgentCgroup.kill`, :meth:`AgentCgroup.remove`) through :func:`in_kill_thread`, on threads of
their own: a kill-all kills every sandbox at once, and those kills must neither queue behind the
default executor's few workers (git, file scans) nor hold them while processes exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from sandbox.base import SandboxError, SandboxStats

log = logging.getLogger(__name__)

V1_CONTROLLERS = ("memory", "pids", "cpu", "cpuacct", "freezer")
_CFS_PERIOD_US = 100_000
KILL_THREADS = 32
"""Threads for blocking kills and removals (they mostly sleep while processes exit)."""
_ESCALATE_S = 1.0
"""A v1 kill that has not emptied the cgroup after this long freezes it for every further pass
(dying processes of a sandbox can take a few hundred ms to leave when hundreds die together)."""

_T = TypeVar("_T")
_killers: ThreadPoolExecutor | None = None


async def in_kill_thread(fn: Callable[..., _T], *args: object) -> _T:
    """Run a blocking kill/remove/signal call on the sandbox kill threads."""
    global _killers
    if _killers is None:
        _killers = ThreadPoolExecutor(KILL_THREADS, thread_name_prefix="sandbox-kill")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_killers, functools.partial(fn, *args))


@dataclass(frozen=True)
class CgroupLayout:
    """The cgroup hierarchies this host offers."""

    version: int
    """2 (unified), 1 (legacy/hybrid) or 0 (no usable cgroupfs)."""
    v2_root: Path | None = None
    v1_mounts: dict[str, Path] = field(default_factory=dict)
    """v1 controller name -> mount point (co-mounted controllers share a mount point)."""

    @property
    def hierarchies(self) -> list[Path]:
        if self.version == 2 and self.v2_root is not None:
            return [self.v2_root]
        return sorted(set(self.v1_mounts.values()))


def detect_layout(mountinfo: Path = Path("/proc/self/mountinfo")) -> CgroupLayout:
    """Read the cgroup mounts of this process's mount namespace."""
    v2_root: Path | None = None
    v1: dict[str, Path] = {}
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return CgroupLayout(version=0)
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mount_point, fstype, super_opts = Path(fields[4]), rfields[0], rfields[2].split(",")
        if fstype == "cgroup2":
            v2_root = mount_point
        elif fstype == "cgroup":
            for ctrl in V1_CONTROLLERS:
                if ctrl in super_opts:
                    v1.setdefault(ctrl, mount_point)
    if v2_root is not None:
        controllers = _read(v2_root / "cgroup.controllers").split()
        if {"memory", "pids"} <= set(controllers):
            return CgroupLayout(version=2, v2_root=v2_root)
    if "memory" in v1 or "pids" in v1:
        return CgroupLayout(version=1, v1_mounts=v1)
    return CgroupLayout(version=0)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _read_int(path: Path) -> int | None:
    text = _read(path).strip()
    try:
        return int(text)
    except ValueError:
        return None


def _keyed(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


@dataclass
class KillProgress:
    """The state of one kill across its passes (:meth:`AgentCgroup.kill_pass`)."""

    deadline: float
    """``time.monotonic()`` after which the kill gives up (and a freeze stops waiting)."""
    started: float = field(default_factory=time.monotonic)
    signalled: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class Limits:
    memory_mb: int
    cpu_quota: float | None
    pids_max: int


class AgentCgroup:
    """One agent's cgroup (one directory per hierarchy)."""

    def __init__(self, layout: CgroupLayout, parent: str, agent_id: str) -> None:
        self.layout = layout
        self.agent_id = agent_id
        self.dirs = [h / parent / agent_id for h in layout.hierarchies]

    def _dir(self, controller: str) -> Path | None:
        if self.layout.version == 2:
            return self.dirs[0]
        mount = self.layout.v1_mounts.get(controller)
        return None if mount is None else self.dirs[self.layout.hierarchies.index(mount)]

    @property
    def path(self) -> str:
        """A printable handle: the memory hierarchy's directory."""
        return str(self._dir("memory") or self.dirs[0])

    def exists(self) -> bool:
        return any(d.is_dir() for d in self.dirs)

    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]

    def entry_files(self) -> list[Path]:
        """Where a single-threaded launcher writes itself to enter (``tasks`` on v1)."""
        name = "cgroup.procs" if self.layout.version == 2 else "tasks"
        return [d / name for d in self.dirs]

    def create(self, limits: Limits) -> None:
        """Create the directories and write the limits; raises SandboxError on failure."""
        try:
            for d in self.dirs:
                d.mkdir(parents=True, exist_ok=True)
            self._apply(limits)
        except OSError as exc:
            self.remove(timeout_s=0.5)
            raise SandboxError(f"cannot set up cgroup {self.path}: {exc}") from exc

    def _apply(self, limits: Limits) -> None:
        mem = limits.memory_mb * 1024 * 1024
        quota = (
            None if limits.cpu_quota is None else max(1000, int(limits.cpu_quota * _CFS_PERIOD_US))
        )
        if self.layout.version == 2:
            d = self.dirs[0]
            _write(d / "memory.max", str(mem))
            if (d / "memory.swap.max").exists():
                _write(d / "memory.swap.max", "0")
            _write(d / "pids.max", str(limits.pids_max))
            if (d / "cpu.max").exists():
                _write(d / "cpu.max", f"{quota if quota else 'max'} {_CFS_PERIOD_US}")
            return
        if (m := self._dir("memory")) is not None:
            _write(m / "memory.limit_in_bytes", str(mem))
            if (m / "memory.memsw.limit_in_bytes").exists():
                _write(m / "memory.memsw.limit_in_bytes", str(mem))
        if (p := self._dir("pids")) is not None:
            _write(p / "pids.max", str(limits.pids_max))
        if (c := self._dir("cpu")) is not None:
            _write(c / "cpu.cfs_period_us", str(_CFS_PERIOD_US))
            _write(c / "cpu.cfs_quota_us", str(quota if quota else -1))

    def pids(self) -> list[int]:
        out: set[int] = set()
        for f in self.procs_files():
            for tok in _read(f).split():
                out.add(int(tok))
        return sorted(out)

    def stats(self) -> SandboxStats:
        if self.layout.version == 2:
            d = self.dirs[0]
            cpu_us = _keyed(d / "cpu.stat").get("usage_usec", 0)
            events = _keyed(d / "memory.events")
            return SandboxStats(
                cpu_seconds=cpu_us / 1e6,
                memory_bytes=_read_int(d / "memory.current") or 0,
                pids=_read_int(d / "pids.current") or 0,
                oom_killed=events.get("oom_kill", 0) > 0,
            )
        cpu_s = 0.0
        if (a := self._dir("cpuacct")) is not None:
            cpu_s = (_read_int(a / "cpuacct.usage") or 0) / 1e9
        mem, oom = 0, False
        if (m := self._dir("memory")) is not None:
            mem = _read_int(m / "memory.usage_in_bytes") or 0
            oom_control = _keyed(m / "memory.oom_control")
            if "oom_kill" in oom_control:
                oom = oom_control["oom_kill"] > 0
            else:  # pragma: no cover - kernels before 4.13
                oom = (_read_int(m / "memory.failcnt") or 0) > 0
        pids = 0
        if (p := self._dir("pids")) is not None:
            pids = _read_int(p / "pids.current") or 0
        return SandboxStats(cpu_seconds=cpu_s, memory_bytes=mem, pids=pids, oom_killed=oom)

    def signal_all(self, sig: signal.Signals) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self, timeout_s: float = 5.0) -> bool:
        """SIGKILL every process in the cgroup; True when it is empty before ``timeout_s``.

        Passes of :meth:`kill_pass` with short sleeps in between, until the cgroup is empty.
        """
        progress = KillProgress(time.monotonic() + timeout_s)
        delay = 0.0005
        while not self.kill_pass(progress):
            if time.monotonic() > progress.deadline:
                return not self.pids()
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
        return True

    def kill_pass(self, progress: KillProgress) -> bool:
        """One pass of a kill, not waiting for anything; True when the cgroup is empty.

        v2: ``cgroup.kill``. v1 has none: SIGKILL every pid listed. A sandbox's processes live in
        a PID namespace whose init is among them, and its death makes the kernel kill the rest of
        the namespace, so the first pass is usually the only one that signals (about 0.15 ms,
        against 1 ms with the freezer); later passes wait for the dying to leave. Once a pid
        shows up that no earlier pass of this kill saw (something outside a PID namespace forking
        while we kill), or ``_ESCALATE_S`` after the first pass (e.g. a cgroup left frozen), a
        pass freezes the cgroup (so nothing forks while we signal), SIGKILLs every pid and thaws
        (frozen tasks only die once thawed); its freeze waits until the deadline at most.
        """
        signalled = progress.signalled
        if not signalled and self.layout.version == 2:
            with contextlib.suppress(OSError):
                _write(self.dirs[0] / "cgroup.kill", "1")
        pids = self.pids()
        if not pids:
            return True
        freezer = self._dir("freezer") if self.layout.version == 1 else None
        if freezer is not None and not (freezer / "freezer.state").exists():
            freezer = None
        escalate = freezer is not None and bool(signalled)
        escalate = escalate and (
            not signalled.issuperset(pids) or time.monotonic() - progress.started > _ESCALATE_S
        )
        if escalate and freezer is not None:
            self._freeze(freezer, progress.deadline)
            pids = self.pids()
            self._signal(pids)
            with contextlib.suppress(OSError):
                _write(freezer / "freezer.state", "THAWED")
        else:
            self._signal(pids)
        signalled.update(pids)
        return False

    @staticmethod
    def _signal(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _freeze(freezer: Path, deadline: float) -> None:
        with contextlib.suppress(OSError):
            _write(freezer / "freezer.state", "FROZEN")
        while _read(freezer / "freezer.state").strip() == "FREEZING":
            if time.monotonic() > deadline:
                return
            time.sleep(0.002)

    def remove(self, timeout_s: float = 5.0) -> bool:
        """Kill what is left and remove the directories; True when all are gone.

        Kill and rmdir alternate until the deadline: a launcher that had not yet written its pid
        when we first looked may enter the cgroup meanwhile (or fail closed once it is gone).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            self.kill(max(0.0, deadline - time.monotonic()))
            error: OSError | None = None
            for d in self.dirs:
                try:
                    d.rmdir()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    error = exc
            if error is None:
                return True
            if time.monotonic() > deadline:
                log.warning(
                    "cannot remove cgroup", extra={"cgroup": self.path, "error": str(error)}
                )
                return False
            time.sleep(0.02)


class CgroupManager:
    """Creates and finds agent cgroups under ``<hierarchy>/<parent>``.

    ``parent`` may have several parts: the engine gives each instance ``<top>/<instance slug>``,
    so that listing, reaping and removing the parent only ever see that instance's agents.
    """

    def __init__(self, parent: str = "mosaic", layout: CgroupLayout | None = None) -> None:
        parts = Path(parent).parts
        if not parts or Path(parent).is_absolute() or any(p in (".", "..") for p in parts):
            raise SandboxError(f"cgroup parent must be a relative name, got {parent!r}")
        self.parent = parent
        self.layout = layout if layout is not None else detect_layout()
        self._problem: str | None = None

    def usable(self) -> str | None:
        """None when agent cgroups can be created here, else the reason they cannot."""
        if self.layout.version == 0:
            return "no cgroup hierarchy with memory/pids controllers is mounted"
        try:
            for h in self.layout.hierarchies:
                (h / self.parent).mkdir(parents=True, exist_ok=True)
            if self.layout.version == 2:
                self._enable_v2_controllers()
        except OSError as exc:
            return f"cgroups not writable ({exc.strerror or exc})"
        if self.layout.version == 1:
            missing = [c for c in V1_CONTROLLERS if c not in self.layout.v1_mounts]
            if missing:
                log.warning("cgroup v1 controllers missing", extra={"missing": missing})
        return None

    def _enable_v2_controllers(self) -> None:
        root = self.layout.v2_root
        assert root is not None
        wanted = [c for c in ("memory", "pids", "cpu") if c in _read(root / "cgroup.controllers")]
        node = root
        for part in Path(self.parent).parts:
            current = _read(node / "cgroup.subtree_control").split()
            missing = [c for c in wanted if c not in current]
            if missing:
                _write(node / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))
            node = node / part
        current = _read(node / "cgroup.subtree_control").split()
        missing = [c for c in wanted if c not in current]
        if missing:
            _write(node / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))

    def agent(self, agent_id: str) -> AgentCgroup:
        return AgentCgroup(self.layout, self.parent, agent_id)

    def list_agents(self) -> list[str]:
        names: set[str] = set()
        for h in self.layout.hierarchies:
            with contextlib.suppress(OSError):
                names.update(e.name for e in os.scandir(h / self.parent) if e.is_dir())
        return sorted(names)

    def release(self) -> bool:
        """Remove the parent's directories if empty; never kills, leaves its ancestors alone.
        True when they are gone: an agent cgroup left in them keeps them (for reconciliation)."""
        gone = True
        for h in self.layout.hierarchies:
            try:
                (h / self.parent).rmdir()
            except FileNotFoundError:
                pass
            except OSError:  # EBUSY: an agent cgroup is still in it
                gone = False
        return gone

    def remove_parent(self) -> None:
        """Kill everything under the parent and remove it, nested groups first."""
        nested: set[str] = set()
        for h in self.layout.hierarchies:
            for dirpath, _dirs, _files in os.walk(h / self.parent):
                rel = os.path.relpath(dirpath, h / self.parent)
                if rel != ".":
                    nested.add(rel)
        for rel in sorted(nested, key=lambda r: r.count("/"), reverse=True):
            AgentCgroup(self.layout, self.parent, rel).remove(timeout_s=2.0)
        for h in self.layout.hierarchies:
            node = h / self.parent
            while node != h:
                try:
                    node.rmdir()
                except OSError:
                    break
                node = node.parent
