"""The ``bwrap`` backend: bubblewrap namespaces + a per-agent cgroup (default on Linux).

``start`` creates the agent's cgroup with its limits, then launches
``sh (enter cgroup) -> exec bwrap <policy> -- argv`` so the agent never runs outside its cgroup.
Without writable cgroups it starts anyway under rlimits and reports the degraded mode.
Kill and cleanup act on the whole cgroup, so double-forked descendants go too; the pid namespace
and ``--die-with-parent`` additionally take everything down when the orchestrator dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
from dataclasses import dataclass

import psutil

from sandbox.base import SandboxError, SandboxHealth, SandboxSpec, SandboxStats
from sandbox.cgroups import AgentCgroup, CgroupLayout, CgroupManager, Limits
from sandbox.launcher import CGROUP_ENTER_EXIT_CODE, enter_cgroup_argv, rlimit_argv
from sandbox.policy import build_args, validate_spec
from sandbox.seccomp import build_filter, filter_fd

log = logging.getLogger(__name__)

_LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


@dataclass
class _Prepared:
    argv: list[str]
    pass_fds: list[int]
    stdout_fd: int
    stderr_fd: int
    cgroup: AgentCgroup | None

    def close_fds(self) -> None:
        for fd in (*self.pass_fds, self.stdout_fd, self.stderr_fd):
            with contextlib.suppress(OSError):
                os.close(fd)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the degraded mode's view of a sandbox)."""
    try:
        root = psutil.Process(pid)
        return [pid, *(c.pid for c in root.children(recursive=True))]
    except psutil.Error:
        return []


class BwrapProcess:
    """A running bwrap sandbox. Every method is safe after the process has ended."""

    def __init__(
        self, agent_id: str, proc: asyncio.subprocess.Process, cgroup: AgentCgroup | None
    ) -> None:
        self.agent_id = agent_id
        self._proc = proc
        self._cgroup = cgroup
        self._last = SandboxStats()
        self._cleaned = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def handle(self) -> dict[str, str]:
        return {
            "backend": "bwrap",
            "pid": str(self._proc.pid),
            "cgroup": self._cgroup.path if self._cgroup else "",
        }

    def _members(self) -> list[int]:
        if self._cgroup is not None:
            return self._cgroup.pids()
        return _tree(self._proc.pid) if self._proc.returncode is None else []

    async def wait(self) -> int:
        rc = await self._proc.wait()
        await self.stats()  # capture oom_killed and usage before cleanup removes the cgroup
        if rc == CGROUP_ENTER_EXIT_CODE and self._cgroup is not None:
            log.error("sandbox could not enter its cgroup", extra={"agent_id": self.agent_id})
        return rc

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process in the sandbox.

        Except for SIGKILL, bwrap itself (our direct child) is skipped: it exits with the agent's
        status once the agent exits, while a TERM would make it die first and SIGKILL the agent.
        """
        for pid in self._members():
            if pid == self._proc.pid and sig != signal.SIGKILL:
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    async def _gone(self) -> bool:
        members = await asyncio.to_thread(self._members)
        return self._proc.returncode is not None and not members

    async def kill(self, grace_s: float = 5.0) -> None:
        if await self._gone():
            return
        await asyncio.to_thread(self.signal, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            if await self._gone():
                return
            await asyncio.sleep(0.02)
        await self._kill_now()

    async def _kill_now(self) -> None:
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.kill)
        else:
            await asyncio.to_thread(self.signal, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await self._proc.wait()

    async def stats(self) -> SandboxStats:
        if self._cleaned:
            return self._last
        if self._cgroup is not None:
            current = await asyncio.to_thread(self._cgroup.stats)
        else:
            current = await asyncio.to_thread(self._tree_stats)
        # oom_killed is sticky; cpu time never goes backwards once processes have exited.
        self._last = SandboxStats(
            cpu_seconds=max(current.cpu_seconds, self._last.cpu_seconds),
            memory_bytes=current.memory_bytes,
            pids=current.pids,
            oom_killed=current.oom_killed or self._last.oom_killed,
        )
        return self._last

    def _tree_stats(self) -> SandboxStats:
        cpu, mem, n = 0.0, 0, 0
        for pid in self._members():
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                t = p.cpu_times()
                cpu += t.user + t.system
                mem += p.memory_info().rss
                n += 1
        return SandboxStats(cpu_seconds=cpu, memory_bytes=mem, pids=n)

    async def cleanup(self) -> None:
        if self._cleaned:
            return
        await self._kill_now()
        await self.stats()
        self._cleaned = True
        if self._cgroup is not None:
            await asyncio.to_thread(self._cgroup.remove)


class BwrapSandbox:
    """Starts agents under bubblewrap, each in its own cgroup ``<parent>/<agent_id>``."""

    name = "bwrap"

    def __init__(
        self,
        *,
        cgroup_parent: str = "mosaic",
        bwrap: str = "bwrap",
        layout: CgroupLayout | None = None,
        seccomp: bool = True,
    ) -> None:
        path = shutil.which(bwrap)
        if path is None:
            raise SandboxError(
                f"bubblewrap ({bwrap!r}) not found: install the 'bubblewrap' package "
                "or choose another sandbox backend"
            )
        self._bwrap = path
        self._prlimit = shutil.which("prlimit")
        self._cgroups = CgroupManager(cgroup_parent, layout)
        self._cg_problem: str | None = None
        self._cg_checked = False
        self._seccomp = build_filter() if seccomp else None
        self._probe: str | None = None

    async def _cgroup_problem(self) -> str | None:
        if not self._cg_checked:
            self._cg_problem = await asyncio.to_thread(self._cgroups.usable)
            self._cg_checked = True
            if self._cg_problem:
                log.warning(
                    "sandbox degraded: no cgroups, limits via rlimits only",
                    extra={"reason": self._cg_problem},
                )
        return self._cg_problem

    def _prepare(self, spec: SandboxSpec, use_cgroup: bool) -> _Prepared:
        validate_spec(spec)
        fds: list[int] = []
        out = err = -1
        cgroup: AgentCgroup | None = None
        try:
            spec.log_dir.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
            out = os.open(spec.log_dir / "stdout.log", flags, 0o640)
            err = os.open(spec.log_dir / "stderr.log", flags, 0o640)
            if self._seccomp is not None:
                fds.append(filter_fd(self._seccomp))
            args = build_args(spec, bwrap=self._bwrap, seccomp_fd=fds[0] if fds else None)
            argv = args.argv(spec.argv)
            if use_cgroup:
                cgroup = self._cgroups.agent(spec.agent_id)
                if cgroup.exists():
                    raise SandboxError(f"a sandbox for agent {spec.agent_id!r} already exists")
                cgroup.create(Limits(spec.memory_mb, spec.cpu_quota, spec.pids_max))
                argv = enter_cgroup_argv(cgroup.procs_files(), argv)
            elif self._prlimit is not None:
                argv = rlimit_argv(spec.memory_mb, spec.pids_max, argv, self._prlimit)
        except OSError as exc:
            _Prepared([], fds, out, err, None).close_fds()
            raise SandboxError(f"cannot prepare sandbox: {exc}") from exc
        except SandboxError:
            _Prepared([], fds, out, err, None).close_fds()
            raise
        return _Prepared(argv, fds, out, err, cgroup)

    async def start(self, spec: SandboxSpec) -> BwrapProcess:
        use_cgroup = await self._cgroup_problem() is None
        prep = await asyncio.to_thread(self._prepare, spec, use_cgroup)
        try:
            proc = await asyncio.create_subprocess_exec(
                *prep.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=prep.stdout_fd,
                stderr=prep.stderr_fd,
                env=_LAUNCH_ENV,
                pass_fds=prep.pass_fds,
                start_new_session=True,
            )
        except OSError as exc:
            if prep.cgroup is not None:
                await asyncio.to_thread(prep.cgroup.remove)
            raise SandboxError(f"cannot start bwrap: {exc.strerror or exc}") from exc
        finally:
            prep.close_fds()
        log.info(
            "sandbox started",
            extra={"agent_id": spec.agent_id, "pid": proc.pid, "backend": "bwrap"},
        )
        return BwrapProcess(spec.agent_id, proc, prep.cgroup)

    async def _probe_bwrap(self) -> str | None:
        """Run ``true`` under a minimal bwrap once; the error text if that fails."""
        proc = await asyncio.create_subprocess_exec(
            self._bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
            "--ro-bind", "/", "/", "--", "true",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=_LAUNCH_ENV,
        )  # fmt: skip
        _, err = await proc.communicate()
        if proc.returncode == 0:
            return None
        return err.decode(errors="replace").strip() or f"exit {proc.returncode}"

    async def health(self) -> SandboxHealth:
        if self._probe is None:
            self._probe = await self._probe_bwrap() or ""
        problem = await self._cgroup_problem()
        degraded = [] if problem is None else [f"no cgroup limits (rlimits only): {problem}"]
        if self._seccomp is None:
            degraded.append("seccomp filter disabled")
        if self._probe:
            return SandboxHealth("bwrap", ok=False, degraded=degraded, detail=self._probe)
        return SandboxHealth("bwrap", ok=True, degraded=degraded, detail=self._bwrap)

    async def reap_orphans(self, live_agent_ids: set[str]) -> list[str]:
        if await self._cgroup_problem() is not None:
            return []
        names = await asyncio.to_thread(self._cgroups.list_agents)
        reaped = []
        for name in names:
            if name in live_agent_ids:
                continue
            await asyncio.to_thread(self._cgroups.agent(name).remove)
            log.info("reaped orphan sandbox", extra={"agent_id": name})
            reaped.append(name)
        return reaped
