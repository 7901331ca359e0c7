"""The ``none`` backend: a plain child process in its own session and process group.

Development only: no isolation, no resource limits. Killing it signals the process group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from sandbox.base import SandboxError, SandboxHealth, SandboxSpec, SandboxStats
from sandbox.policy import validate_spec

log = logging.getLogger(__name__)


class NoneProcess:
    def __init__(self, agent_id: str, proc: asyncio.subprocess.Process) -> None:
        self.agent_id = agent_id
        self._proc = proc
        self._pgid = proc.pid

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    @property
    def handle(self) -> dict[str, str]:
        return {"backend": "none", "pgid": str(self._pgid)}

    async def wait(self) -> int:
        return await self._proc.wait()

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._pgid, sig)

    def _group_alive(self) -> bool:
        try:
            os.killpg(self._pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    async def kill(self, grace_s: float = 5.0) -> None:
        self.signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while loop.time() < deadline:
            if self._proc.returncode is not None and not self._group_alive():
                return
            await asyncio.sleep(0.05)
        self.signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await self._proc.wait()

    async def stats(self) -> SandboxStats:
        return SandboxStats()

    async def cleanup(self) -> None:
        if self._group_alive():
            self.signal(signal.SIGKILL)
        if self._proc.returncode is None:
            await self._proc.wait()


def _open_logs(log_dir: Path) -> tuple[int, int]:
    log_dir.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out = os.open(log_dir / "stdout.log", flags, 0o640)
    try:
        err = os.open(log_dir / "stderr.log", flags, 0o640)
    except OSError:
        os.close(out)
        raise
    return out, err


class NoneSandbox:
    name = "none"

    def __init__(self) -> None:
        log.warning("sandbox backend 'none': agents run UNCONFINED (development only)")

    async def start(self, spec: SandboxSpec) -> NoneProcess:
        validate_spec(spec)
        try:
            out, err = await asyncio.to_thread(_open_logs, spec.log_dir)
        except OSError as exc:
            raise SandboxError(f"cannot open logs in {spec.log_dir}: {exc}") from exc
        try:
            proc = await asyncio.create_subprocess_exec(
                *spec.argv,
                cwd=spec.workdir,
                env={"HOME": str(spec.workdir), **spec.env},
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        except OSError as exc:
            raise SandboxError(f"cannot start {spec.argv[0]!r}: {exc.strerror or exc}") from exc
        finally:
            os.close(out)
            os.close(err)
        return NoneProcess(spec.agent_id, proc)

    async def health(self) -> SandboxHealth:
        return SandboxHealth(backend="none", ok=True, degraded=["no isolation (development only)"])

    async def reap_orphans(self, live_agent_ids: set[str]) -> list[str]:
        return []
