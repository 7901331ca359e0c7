"""Escape suite, host root: the agent is an ordinary user and nothing can make it host root.

Every attempt runs inside a real bwrap sandbox under real cgroups, started as root like CI. The
sysctl probe only *opens* files for writing and closes them: it never writes a byte, so a broken
sandbox could not change the host even if the test fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandbox.bwrap import BwrapSandbox
from sandbox.identity import DEFAULT_SANDBOX_UID, SANDBOX_HOME

from .attack import failed, results, script
from .conftest import Workspace, needs_bwrap

pytestmark = needs_bwrap
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop is what root does")


def _status(pid: int, field: str) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1:]
    return []


def _host_ranges(pid: int, kind: str) -> list[tuple[int, int, int]]:
    """``/proc/<pid>/{uid,gid}_map`` as the host sees it: (inside, host, count) ranges."""
    rows = Path(f"/proc/{pid}/{kind}_map").read_text().split("\n")
    return [tuple(map(int, r.split())) for r in rows if r.strip()]  # type: ignore[misc]


@root_only
async def test_no_inside_uid_maps_to_host_root(
    ws: Workspace, bwrap_sandbox: BwrapSandbox, needs_cgroups: None
) -> None:
    ready = ws.worktree / "ready"
    proc = await bwrap_sandbox.start(
        ws.spec(["/bin/sh", "-c", f"id -u > {ready}.tmp; mv {ready}.tmp {ready}; sleep 30"])
    )
    try:
        for _ in range(500):
            if ready.exists():
                break
            await asyncio.sleep(0.01)
        assert ready.read_text().strip() == str(DEFAULT_SANDBOX_UID)
        members = await asyncio.to_thread(proc._members)  # every process of the sandbox
        host_ns = os.readlink("/proc/self/ns/user")
        namespaced = [p for p in members if os.readlink(f"/proc/{p}/ns/user") != host_ns]
        agent = [p for p in members if Path(os.readlink(f"/proc/{p}/exe")).name != "bwrap"]
        assert len(agent) >= 2 and set(agent) <= set(namespaced)  # the shell and its sleep
        for pid in namespaced:  # a user namespace that never reaches host uid/gid 0
            for kind in ("uid", "gid"):
                for _inside, host, count in _host_ranges(pid, kind):
                    assert not host <= 0 < host + count, (pid, kind)
            assert _status(pid, "CapEff") == ["0000000000000000"], pid  # not even bwrap's
        for pid in agent:
            assert _status(pid, "Uid") == [str(DEFAULT_SANDBOX_UID)] * 4, pid
    finally:
        await proc.kill(grace_s=0.1)
        await proc.cleanup()


async def test_the_agent_is_an_ordinary_user_with_a_home(ws: Workspace, run: Any) -> None:
    body = f"""
import pwd
R["uid"] = os.getuid()
R["euid"] = os.geteuid()
R["caps"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Cap")]
R["pw"] = list(pwd.getpwuid(os.getuid())[:7])
R["HOME"] = os.environ.get("HOME")
R["home_mode"] = oct(os.stat({SANDBOX_HOME!r}).st_mode & 0o777)
t("home_write", write, {SANDBOX_HOME!r} + "/.config")
t("worktree_write", write, "made-by-agent")
t("tmp_write", write, "/tmp/x")
"""
    rc, _ = await run(ws.py(script(body)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    assert res["uid"] == res["euid"] != 0
    assert set(res["caps"]) == {"0000000000000000"}
    assert res["pw"][0] == "agent" and res["pw"][5] == SANDBOX_HOME == res["HOME"]
    assert res["home_mode"] == "0o700"
    assert res["home_write"] == res["worktree_write"] == res["tmp_write"] == "ok"
    made = ws.worktree / "made-by-agent"
    assert made.read_text() == "pwned"
    if os.geteuid() == 0:
        assert made.stat().st_uid == DEFAULT_SANDBOX_UID


async def test_no_sysctl_or_kernel_facing_proc_file_opens_for_writing(
    ws: Workspace, run: Any
) -> None:
    body = """
opened, tried = [], 0
for top in ("/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus", "/proc/fs"):
    if os.path.isfile(top):
        paths = [top]
    else:
        paths = [os.path.join(d, f) for d, _, fs in os.walk(top) for f in fs]
    for path in paths:
        tried += 1
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # open only: never write a byte
        except OSError:
            continue
        os.close(fd)
        opened.append(path)
R["tried"] = tried
R["opened"] = opened
for name in ("kcore", "timer_list"):
    if os.path.exists("/proc/" + name):
        t(name, read, "/proc/" + name)
t("kallsyms", lambda: sorted({l.split()[0] for l in open("/proc/kallsyms")} - {"0" * 16}))
R["mounts"] = [l.split()[1] for l in open("/proc/self/mounts") if l.split()[1].startswith("/proc/")]
"""
    rc, _ = await run(ws.py(script(body)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    assert res["tried"] > 100  # the walk reached the sysctls
    assert res["opened"] == []
    for name in ("kcore", "timer_list"):  # host root's: nothing to read
        assert failed(res.get(name, "ERR absent")), (name, res.get(name))
    assert res["kallsyms"] == []  # no kernel address leaks to an unprivileged user
    assert "/proc/sys" in res["mounts"]
    if os.path.exists("/proc/sysrq-trigger"):
        assert "/proc/sysrq-trigger" in res["mounts"]
    assert "/proc/sys" in res["mounts"]


async def test_no_setuid_or_setgid_file_by_any_route(ws: Workspace, run: Any) -> None:
    body = """
t("open_4755", lambda: os.close(os.open("o1", os.O_CREAT | os.O_WRONLY, 0o4755)))
t("open_2755", lambda: os.close(os.open("o2", os.O_CREAT | os.O_WRONLY, 0o2755)))
here = os.open(".", os.O_RDONLY)
t("openat_6755", lambda: os.close(os.open("o3", os.O_CREAT | os.O_WRONLY, 0o6755, dir_fd=here)))
t("creat_4755", lambda: sys(85, b"o4", 0o4755))
t("open_syscall_4755", lambda: sys(2, b"o9", os.O_CREAT | os.O_WRONLY, 0o4755))
t("mknod_4755", lambda: os.mknod("o5", 0o4755 | 0o100000))
t("mknodat_2755", lambda: sys(259, -100, b"o6", 0o2755 | 0o100000, 0))
t("tmpfile_4755", lambda: os.close(os.open(".", os.O_TMPFILE | os.O_WRONLY, 0o4755)))
open("plain", "w").close()
t("chmod", lambda: os.chmod("plain", 0o4755))
t("chmod_sgid", lambda: os.chmod("plain", 0o2755))
t("fchmod", lambda: os.fchmod(os.open("plain", os.O_RDONLY), 0o4755))
t("fchmodat", lambda: sys(268, -100, b"plain", 0o6755))
t("fchmodat2", lambda: sys(452, -100, b"plain", 0o4755, 0))
t("openat2", lambda: sys(437, -100, b"o7", 0, 0))
t("plain_0755", lambda: os.chmod("plain", 0o755))
t("open_0644", lambda: os.close(os.open("o8", os.O_CREAT | os.O_WRONLY, 0o644)))
t("read_with_mode_bits", lambda: os.close(os.open("plain", os.O_RDONLY, 0o4755)))
R["modes"] = {n: oct(os.stat(n).st_mode) for n in os.listdir(".") if os.path.exists(n)}
"""
    rc, _ = await run(ws.py(script(body)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    routes = ("open_4755", "open_2755", "openat_6755", "creat_4755", "open_syscall_4755",
              "mknod_4755", "mknodat_2755",
              "tmpfile_4755", "chmod", "chmod_sgid", "fchmod", "fchmodat", "fchmodat2")  # fmt: skip
    for route in routes:
        assert failed(res[route]), (route, res[route])
    assert "Function not implemented" in res["openat2"]  # ENOSYS: libc falls back to openat
    # ordinary modes still work
    assert res["plain_0755"] == res["open_0644"] == res["read_with_mode_bits"] == "ok"
    for path in ws.worktree.rglob("*"):
        assert not path.stat().st_mode & (stat.S_ISUID | stat.S_ISGID), path


async def test_io_uring_and_new_user_namespaces_are_refused(ws: Workspace, run: Any) -> None:
    body = """
import ctypes
params = ctypes.create_string_buffer(120)
t("io_uring_setup", lambda: sys(425, 4, params))
t("io_uring_enter", lambda: sys(426, 0, 0, 0, 0, None, 0))
t("io_uring_register", lambda: sys(427, 0, 0, None, 0))
t("unshare_user", lambda: sys(272, 0x10000000))
t("clone3", lambda: sys(435, None, 0))
import subprocess
t("unshare_cmd", lambda: subprocess.run(["unshare", "-U", "true"], check=True, capture_output=True))
"""
    rc, _ = await run(ws.py(script(body)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register", "unshare_user",
                 "clone3", "unshare_cmd"):  # fmt: skip
        assert failed(res[name]), (name, res[name])
    assert any(e in res["io_uring_setup"] for e in ("not permitted", "not implemented"))


async def test_host_secret_directories_are_invisible(ws: Workspace, run: Any) -> None:
    body = """
for p in ("/etc/ssl/private", "/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh",
          "/root", "/var/lib", "/run/secrets", "/etc/mosaic-orchestrator.env"):
    R[p] = os.path.lexists(p)
R["certs"] = os.path.isdir("/etc/ssl/certs")
R["passwd"] = open("/etc/passwd").read()
"""
    rc, _ = await run(ws.py(script(body)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    visible = [p for p, seen in res.items() if p.startswith("/") and seen is True]
    # /root may appear only as the empty mount point of a bound interpreter under it
    assert [p for p in visible if p != "/root"] == [], visible
    assert res["certs"] is True  # TLS roots stay usable
    host_users = {line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines()}
    inside_users = {line.split(":")[0] for line in res["passwd"].splitlines()}
    assert inside_users <= {"root", "agent", "nobody"}
    assert inside_users != host_users


async def test_tmp_is_a_size_limited_tmpfs(ws: Workspace, run: Any) -> None:
    body = """
st = os.statvfs("/tmp")
R["size_mb"] = st.f_blocks * st.f_frsize // 2**20
def fill():
    with open("/tmp/fill", "wb") as f:
        for _ in range(64):  # bounded: at most 64 MiB
            f.write(b"x" * 2**20)
t("fill", fill)
"""
    rc, _ = await run(ws.py(script(body), tmp_mb=16, memory_mb=256))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    assert res["size_mb"] == 16
    assert failed(res["fill"]) and "No space left" in res["fill"]


async def test_a_symlinked_git_file_is_refused_not_bound(ws: Workspace, run: Any) -> None:
    secret = ws.root / "host-only"
    secret.write_text("host secret")
    planted = ws.worktree / ".git"
    planted.symlink_to(secret)
    with pytest.raises(Exception, match="symbolic link"):
        await run(ws.spec(["/bin/cat", ".git"], readonly_paths=(planted,)))


@pytest.fixture
def open_ws(tmp_path: Path) -> Iterator[Workspace]:
    """A worktree the sandbox user can reach: nothing is staged, no root step in the chain."""
    root = Path(tempfile.mkdtemp(dir="/tmp", prefix="mosaic-open-"))
    try:
        root.chmod(0o755)
        (root / "wt").mkdir()
        yield Workspace(root=root, worktree=root / "wt", logs=tmp_path / "logs")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@root_only
async def test_without_a_stage_nothing_of_the_sandbox_is_privileged(
    open_ws: Workspace, bwrap_sandbox: BwrapSandbox, needs_cgroups: None
) -> None:
    ready = open_ws.worktree / "ready"
    script = f"cat /proc/self/cgroup > {ready}.tmp; mv {ready}.tmp {ready}; sleep 30"
    proc = await bwrap_sandbox.start(
        open_ws.spec(["/bin/sh", "-c", script], python=False, pids_max=16)
    )
    try:
        for _ in range(500):
            if ready.exists():
                break
            await asyncio.sleep(0.01)
        assert proc._cgroup is not None and ready.exists()
        members = await asyncio.to_thread(proc._members)
        assert len(members) >= 3
        for pid in members:  # the host's view: every process in the agent's own cgroups
            assert Path(f"/proc/{pid}/cgroup").read_text().count(f"/{proc.agent_id}\n") >= 3
        host_ns = os.readlink("/proc/self/ns/user")
        for pid in members:  # nothing of it keeps a capability or stays in the host namespace
            assert os.readlink(f"/proc/{pid}/ns/user") != host_ns, pid
            assert _status(pid, "CapEff") == ["0000000000000000"], pid
    finally:
        await proc.kill(grace_s=0.1)
        await proc.cleanup()


@root_only
async def test_without_a_stage_the_limits_still_hold(
    open_ws: Workspace, run: Any, needs_cgroups: None
) -> None:
    forks = (
        "n=0; ( while [ $n -lt 60 ]; do sleep 5 & n=$((n+1)); echo $n > n; done; wait ) "
        "2>/dev/null; kill -9 -1 2>/dev/null; cat n"
    )
    rc, _ = await run(open_ws.spec(["/bin/sh", "-c", forks], python=False, pids_max=16))
    assert rc == 0, open_ws.stderr()
    assert int(open_ws.stdout().split()[-1]) < 16  # stopped by pids.max
    hog = "head -c 400000000 /dev/zero | tail -c 400000000 > /dev/null"
    rc, stats = await run(open_ws.spec(["/bin/sh", "-c", hog], python=False, memory_mb=64))
    assert rc != 0 and stats.oom_killed
