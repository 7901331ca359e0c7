"""A gate command executor that runs each command in a fresh sandbox of the agent's policy.

``overlays`` (the base versions of files a gate command runs, ``core/gates/pinning.py``) are bound
read-only over their worktree paths in that command's sandbox only. The ``none`` backend binds
nothing, so it refuses them (:class:`~core.gates.models.OverlayUnsupported`): the gate errors
rather than run the agent's version of the file.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from core.gates import CommandResult
from core.gates.models import Overlay, OverlayUnsupported
from core.logcap import cap_logs
from core.logtail import tail_lines
from sandbox import Sandbox, SandboxSpec


class SandboxExecutor:
    """``CommandExecutor`` over a ``Sandbox``: same limits and isolation as the agent itself."""

    def __init__(
        self,
        sandbox: Sandbox,
        template: SandboxSpec,
        log_root: Path,
        *,
        log_cap_mb: int | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.template = template
        self.log_root = log_root
        self.log_cap_mb = log_cap_mb
        """Each command's logs are capped at this many MiB while it runs (the tail is kept)."""
        self.wrap = wrap
        """Wraps each command's argv (e.g. behind the egress forwarder)."""
        self._counter = itertools.count(1)

    async def __call__(
        self, command: str, *, cwd: Path, timeout_s: float, overlays: Sequence[Overlay] = ()
    ) -> CommandResult:
        if overlays and getattr(self.sandbox, "name", "") == "none":
            files = ", ".join(str(dest.relative_to(cwd)) for _src, dest in overlays)
            raise OverlayUnsupported(
                f"the sandbox backend 'none' cannot show the base version of {files} "
                "(changed by the agent) to the gate; use the bwrap or docker backend"
            )
        n = next(self._counter)
        log_dir = self.log_root / f"gate-{n}"
        spec = replace(
            self.template,
            agent_id=f"{self.template.agent_id}-gate-{n}",
            argv=(self.wrap or list)(["/bin/sh", "-c", command]),
            workdir=cwd,
            log_dir=log_dir,
            overlays=(*self.template.overlays, *overlays),
        )
        started = time.monotonic()
        process = await self.sandbox.start(spec)
        capper = asyncio.create_task(self._cap_logs(log_dir))
        timed_out = False
        try:
            try:
                exit_code = await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                timed_out = True
                await process.kill(0.5)
                exit_code = await process.wait()
        finally:
            capper.cancel()
            await asyncio.gather(capper, return_exceptions=True)
            await process.cleanup()
            if self.log_cap_mb is not None:
                await asyncio.to_thread(cap_logs, log_dir, self.log_cap_mb)
        output = "\n".join(
            tail_lines(log_dir / "stdout.log", 200) + tail_lines(log_dir / "stderr.log", 100)
        )
        return CommandResult(exit_code, output, timed_out, time.monotonic() - started)

    async def _cap_logs(self, log_dir: Path) -> None:
        if self.log_cap_mb is None:
            return
        while True:
            await asyncio.sleep(1.0)
            await asyncio.to_thread(cap_logs, log_dir, self.log_cap_mb)
