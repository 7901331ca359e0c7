"""Fixtures for the sandbox tests: real bwrap, real cgroups under a per-session parent."""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from sandbox.base import SandboxSpec
from sandbox.bwrap import BwrapProcess, BwrapSandbox
from sandbox.cgroups import CgroupManager
from sandbox.runtime_binds import python_binds

# The interpreter running the tests, bound the way the product binds its runtime's interpreter.
PYTHON = sys.executable
PY_BINDS = python_binds(PYTHON)
HAVE_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap not installed")


def _cgroups_usable() -> str | None:
    return CgroupManager(f"mosaic-probe-{uuid.uuid4().hex[:8]}").usable()


@pytest.fixture(scope="session")
def cgroup_parent() -> Iterator[str]:
    """A cgroup parent unique to this session, removed with anything left in it at the end."""
    parent = f"mosaic-test-{uuid.uuid4().hex[:10]}"
    yield parent
    CgroupManager(parent).remove_parent()


@pytest.fixture(scope="session")
def cgroups_problem(cgroup_parent: str) -> str | None:
    return CgroupManager(cgroup_parent).usable()


@pytest.fixture
def needs_cgroups(cgroups_problem: str | None) -> None:
    if cgroups_problem is not None:
        pytest.skip(f"cgroups not writable here: {cgroups_problem}")


@dataclass
class Workspace:
    root: Path
    worktree: Path
    logs: Path

    def spec(self, argv: list[str], **kw: Any) -> SandboxSpec:
        agent_id = kw.pop("agent_id", f"agent-{uuid.uuid4().hex[:8]}")
        ro = tuple(kw.pop("ro_binds", ())) + (PY_BINDS if kw.pop("python", True) else ())
        env = kw.pop("env", {"PATH": "/usr/bin:/bin"})
        workdir = kw.pop("workdir", self.worktree)
        return SandboxSpec(
            agent_id=agent_id,
            argv=argv,
            workdir=workdir,
            env=env,
            log_dir=self.logs,
            ro_binds=ro,
            **kw,
        )

    def py(self, code: str, **kw: Any) -> SandboxSpec:
        return self.spec([PYTHON, "-c", code], **kw)

    def stdout(self) -> str:
        return (self.logs / "stdout.log").read_text()

    def stderr(self) -> str:
        return (self.logs / "stderr.log").read_text()


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    wt = tmp_path / "worktree"
    wt.mkdir()
    return Workspace(root=tmp_path, worktree=wt, logs=tmp_path / "logs")


@pytest_asyncio.fixture
async def bwrap_sandbox(cgroup_parent: str) -> AsyncIterator[BwrapSandbox]:
    if not HAVE_BWRAP:
        pytest.skip("bubblewrap not installed")
    yield BwrapSandbox(cgroup_parent=cgroup_parent)


@pytest_asyncio.fixture
async def run(
    bwrap_sandbox: BwrapSandbox,
) -> AsyncIterator[Callable[[SandboxSpec], Any]]:
    """Start a spec, wait for it (bounded), clean it up; returns (exit code, stats)."""
    started: list[BwrapProcess] = []

    async def _run(spec: SandboxSpec, timeout: float = 60.0) -> tuple[int, Any]:
        import asyncio

        proc = await bwrap_sandbox.start(spec)
        started.append(proc)
        try:
            rc = await asyncio.wait_for(proc.wait(), timeout)
        finally:
            await proc.cleanup()
        return rc, await proc.stats()

    yield _run
    for proc in started:
        await proc.cleanup()
