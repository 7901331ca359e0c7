"""Factory, reaper, none backend, seccomp program and runtime binds."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sandbox import create_sandbox
from sandbox.base import SandboxError, SandboxSpec
from sandbox.bwrap import BwrapSandbox
from sandbox.docker import DockerSandbox
from sandbox.none import NoneSandbox
from sandbox.runtime_binds import python_binds
from sandbox.seccomp import build_filter, filter_fd

from .conftest import PYTHON, needs_bwrap


@needs_bwrap
def test_factory_builds_each_backend(cgroup_parent: str) -> None:
    assert isinstance(create_sandbox("bwrap", cgroup_parent=cgroup_parent), BwrapSandbox)
    assert isinstance(create_sandbox(" Docker ", docker_socket="/x.sock"), DockerSandbox)
    assert isinstance(create_sandbox("none"), NoneSandbox)


def test_factory_refuses_unknown_backends() -> None:
    with pytest.raises(
        SandboxError, match=r"unknown sandbox backend 'firejail'.*bwrap, docker, none"
    ):
        create_sandbox("firejail")


def test_seccomp_program_is_well_formed_for_each_arch() -> None:
    for machine in ("x86_64", "aarch64"):
        prog = build_filter(machine)
        assert len(prog) % 8 == 0 and 10 < len(prog) // 8 < 64
        code, _jt, _jf, k = struct.unpack("<HBBI", prog[:8])
        assert (code, k) == (0x20, 4)  # first: load the arch
    with pytest.raises(SandboxError, match="no seccomp filter"):
        build_filter("sparc")
    fd = filter_fd(build_filter())
    try:
        assert os.read(fd, 1 << 16) == build_filter()
    finally:
        os.close(fd)


def test_python_binds_cover_a_venv_and_its_base_install(tmp_path: Path) -> None:
    binds = python_binds(PYTHON)
    assert all(b.is_dir() for b in binds)
    real = Path(os.path.realpath(PYTHON))
    assert any(b in real.parents for b in binds)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    base = tmp_path / "base"
    (base / "bin").mkdir(parents=True)
    (base / "bin" / "python3.11").write_text("")
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\n")
    (venv / "bin" / "python").symlink_to(base / "bin" / "python3.11")
    assert python_binds(venv / "bin" / "python") == (venv, base)
    assert python_binds("/usr/bin/python3") == ()


async def test_none_backend_runs_kills_and_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox = NoneSandbox()
    assert "UNCONFINED" in caplog.text
    health = await sandbox.health()
    assert health.ok and health.degraded
    wt = tmp_path / "wt"
    wt.mkdir()
    spec = SandboxSpec("n1", ["/bin/sh", "-c", "echo hi; sleep 60"], wt, {"PATH": "/bin"}, tmp_path)
    proc = await sandbox.start(spec)
    assert proc.pid and proc.handle["backend"] == "none"
    await asyncio.sleep(0.1)
    await proc.kill(grace_s=1)
    assert await proc.wait() != 0
    await proc.cleanup()
    assert (tmp_path / "stdout.log").read_text() == "hi\n"
    assert (await proc.stats()).pids == 0
    assert await sandbox.reap_orphans(set()) == []
    bad = SandboxSpec("n2", ["/nonexistent"], wt, {}, tmp_path)
    with pytest.raises(SandboxError, match="cannot start"):
        await sandbox.start(bad)


REAPER_CHILD = textwrap.dedent(
    """
    import asyncio, os, sys, time
    sys.path.insert(0, {repo!r})
    from sandbox.reaper import OrphanReaper, enable_subreaper, is_subreaper, zombie_children

    async def main():
        assert enable_subreaper() and is_subreaper()
        # A double-forked grandchild: it is re-parented to us and exits with nobody waiting.
        pid = os.fork()
        if pid == 0:
            if os.fork() == 0:
                time.sleep(0.2)
                os._exit(0)
            os._exit(0)
        os.waitpid(pid, 0)
        # An asyncio child that someone does wait for: the reaper must leave it alone.
        own = await asyncio.create_subprocess_exec("sleep", "0.3")
        reaper = OrphanReaper(interval_s=0.2, grace_scans=2)
        task = asyncio.create_task(reaper.run())
        rc = await own.wait()
        await asyncio.sleep(1.0)
        task.cancel()
        print(len(reaper.reaped), rc, zombie_children())

    asyncio.run(main())
    """
)


def test_reaper_reaps_orphans_but_not_waited_children() -> None:
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run(
        [sys.executable, "-c", REAPER_CHILD.format(repo=repo)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0", "[]"]


def test_reaper_rejects_bad_settings() -> None:
    from sandbox.reaper import OrphanReaper

    with pytest.raises(ValueError):
        OrphanReaper(interval_s=0)
