"""Escape suite, filesystem: every attempt fails and its target on the host is unchanged."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from sandbox.base import SandboxError

from .attack import failed, results, script
from .attack import script as attack
from .conftest import PY_BINDS, Workspace, needs_bwrap

pytestmark = needs_bwrap
CANARY = "mosaic-canary-7c1f0e"


@pytest.fixture
def host(ws: Workspace) -> dict[str, Path]:
    root = ws.root
    paths = {
        "outside": root / "outside" / "target.txt",
        "shared": root / "shared" / "file.txt",
        "state": root / "shared" / "state" / "secret.db",
        "home": root / "home",
        "other": root / "other-agent" / "code.py",
    }
    for key in ("outside", "shared", "state", "other"):
        paths[key].parent.mkdir(parents=True, exist_ok=True)
        paths[key].write_text(f"original {key}")
    (paths["home"] / ".ssh").mkdir(parents=True)
    (paths["home"] / ".bashrc").write_text("original bashrc")
    (paths["home"] / ".ssh" / "id_rsa").write_text("PRIVATE-KEY")
    (ws.worktree / "link-out").symlink_to(paths["outside"])
    return paths


def _snapshot(paths: dict[str, Path]) -> dict[str, str]:
    out = {}
    for p in paths.values():
        for f in [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()):
            out[str(f)] = f.read_text()
    return out


async def test_writes_outside_the_worktree_fail(
    ws: Workspace, run: Any, host: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOSAIC_SECRET_CANARY", CANARY)
    before = _snapshot(host)
    root_bashrc = Path("/root/.bashrc")
    root_before = root_bashrc.stat().st_mtime_ns if root_bashrc.exists() else None
    body = f"""
t("absolute", write, {str(host["outside"])!r})
t("dotdot", write, "../outside/target.txt")
t("parent_dir", write, "../parent-file.txt")
t("home_bashrc", write, os.environ["HOME"] + "/.bashrc", "pwned", "a")
t("tilde_bashrc", write, os.path.expanduser("~/.bashrc"), "pwned", "a")
t("root_bashrc", lambda: open("/root/.bashrc", "a").close())
t("ro_bind", write, {str(host["shared"])!r})
t("usr", write, "/usr/bin/mosaic-evil")
t("etc", write, "/etc/passwd", "x", "a")
t("root_fs", write, "/evil")
t("other_agent", write, {str(host["other"])!r})
t("hidden_state", write, {str(host["state"])!r})
t("symlink_prepared", write, "link-out")
os.symlink({str(host["shared"])!r}, "mylink")
t("symlink_made", write, "mylink")
t("hardlink_ro", os.link, {str(host["shared"])!r}, "hl1")
t("hardlink_sys", os.link, "/usr/bin/env", "hl2")
"""
    spec = ws.py(
        script(body),
        ro_binds=(host["shared"].parent,),
        hidden_paths=(host["state"].parent, host["home"], host["other"].parent),
        env={"PATH": "/usr/bin:/bin", "HOME": str(host["home"])},
    )
    rc, _ = await run(spec)
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    # Each attempt either fails, or lands only in the sandbox's own throwaway tmpfs.
    for name in ("absolute", "dotdot", "home_bashrc", "tilde_bashrc", "root_bashrc", "ro_bind",
                 "usr", "etc", "root_fs", "other_agent", "hidden_state", "symlink_prepared",
                 "symlink_made", "hardlink_ro", "hardlink_sys"):  # fmt: skip
        assert failed(res[name]), (name, res[name])
    assert _snapshot(host) == before
    assert not (ws.root / "parent-file.txt").exists()
    assert not Path("/usr/bin/mosaic-evil").exists() and not Path("/evil").exists()
    after = root_bashrc.stat().st_mtime_ns if root_bashrc.exists() else None
    assert after == root_before
    assert (ws.worktree / "link-out").is_symlink()


async def test_secrets_are_not_readable(
    ws: Workspace, run: Any, host: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MOSAIC_SECRET_CANARY", CANARY)
    me = os.getpid()
    body = f"""
t("ssh_key", read, {str(host["home"] / ".ssh" / "id_rsa")!r})
t("root_dir", os.listdir, "/root")
t("root_ssh", os.listdir, "/root/.ssh")
t("home_dir", os.listdir, {str(host["home"])!r})
t("other_agent", read, {str(host["other"])!r})
t("hidden_state", os.listdir, {str(host["state"].parent)!r})
t("shadow", read, "/etc/shadow")
t("orchestrator_environ", read, "/proc/{me}/environ")
envs = []
for pid in os.listdir("/proc"):
    if pid.isdigit():
        try:
            envs.append(open(f"/proc/{{pid}}/environ", "rb").read().decode(errors="replace"))
        except OSError:
            pass
R["all_environ"] = envs
R["own_env"] = dict(os.environ)
R["proc_pids"] = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
"""
    spec = ws.py(
        script(body),
        ro_binds=(host["shared"].parent,),
        hidden_paths=(host["state"].parent, host["home"]),
    )
    rc, _ = await run(spec)
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    for name in ("ssh_key", "root_ssh", "home_dir", "other_agent", "shadow",
                 "orchestrator_environ"):  # fmt: skip
        assert failed(res[name]), (name, res[name])
    # /root is absent, or holds only the path to an explicitly bound interpreter (PY_BINDS).
    allowed = {p.relative_to("/root").parts[0] for p in PY_BINDS if p.is_relative_to("/root")}
    assert failed(res["root_dir"]) or set(res["root_dir"]) <= allowed, res["root_dir"]
    assert failed(res["hidden_state"]) or res["hidden_state"] == []  # empty 000 read-only tmpfs
    assert CANARY not in ws.stdout()
    assert "MOSAIC_SECRET_CANARY" not in res["own_env"]
    assert me not in res["proc_pids"]


async def test_git_metadata_is_read_only_for_the_agent(ws: Workspace, run: Any) -> None:
    git = shutil.which("git")
    if git is None:
        pytest.skip("git not installed")
    repo = ws.root / "repo"
    ident = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e"}
    env = {**os.environ, **ident, "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@e"}

    def g(*args: str, cwd: Path = repo) -> None:
        subprocess.run([git, *args], cwd=cwd, env=env, check=True, capture_output=True)

    repo.mkdir()
    g("init", "-q", "-b", "main")
    (repo / "README").write_text("hi\n")
    g("add", "README")
    g("commit", "-qm", "init")
    wt = ws.root / "wt-agent"
    g("worktree", "add", "-q", "-b", "mosaic/worker/t1", str(wt))
    common = repo / ".git"
    hooks_before = sorted(p.name for p in (common / "hooks").iterdir())
    config_before = (common / "config").read_bytes()
    gitfile_before = (wt / ".git").read_bytes()
    body = f"""
t("hook", write, {str(common / "hooks" / "pre-commit")!r}, "#!/bin/sh\\ntouch /tmp/pwned\\n")
t("config", write, {str(common / "config")!r}, "[core]\\n\\thooksPath = /tmp\\n", "a")
t("gitfile", write, ".git", "gitdir: /tmp/evil\\n")
t("gitfile_rm", os.remove, ".git")
import subprocess
def git(*a):
    p = subprocess.run(["git", *a], capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(p.stderr.strip())
    return "OUT " + p.stdout.strip()
t("git_config_cmd", git, "config", "core.hooksPath", "/tmp/hooks")
t("git_status", git, "status", "--porcelain")
write("new-file.txt", "agent work")
"""
    spec = ws.py(
        script(body),
        workdir=wt,
        rw_binds=(common,),
        readonly_paths=(common / "hooks", common / "config", wt / ".git"),
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    rc, _ = await run(spec)
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    for name in ("hook", "config", "gitfile", "gitfile_rm", "git_config_cmd"):
        assert failed(res[name]), (name, res[name])
    assert res["git_status"].startswith("OUT"), res["git_status"]  # ordinary git still works
    assert sorted(p.name for p in (common / "hooks").iterdir()) == hooks_before
    assert (common / "config").read_bytes() == config_before
    assert (wt / ".git").read_bytes() == gitfile_before
    assert (wt / "new-file.txt").read_text() == "agent work"


async def test_no_device_nodes_and_no_setid_privilege(ws: Workspace, run: Any) -> None:
    suid = ws.worktree / "suid-cat"
    shutil.copy("/bin/cat", suid)
    os.chmod(suid, 0o4755)  # prepared on the host, as if it were already in the repository
    body = """
import stat
t("mknod_chr", os.mknod, "null2", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
t("mknod_blk", os.mknod, "disk", 0o600 | stat.S_IFBLK, os.makedev(8, 0))
open("tool", "w").close()
t("chmod_suid", os.chmod, "tool", 0o4755)
t("chmod_sgid", os.chmod, "tool", 0o2755)
fd = os.open("tool", os.O_RDONLY)
t("fchmod_suid", os.fchmod, fd, 0o4755)
t("chmod_plain", os.chmod, "tool", 0o755)
import subprocess
R["suid_status"] = subprocess.run(["./suid-cat", "/proc/self/status"], capture_output=True,
                                  text=True).stdout
R["mounts"] = open("/proc/self/mountinfo").read()
"""
    rc, _ = await run(ws.py(script(body)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    for name in ("mknod_chr", "mknod_blk", "chmod_suid", "chmod_sgid", "fchmod_suid"):
        assert failed(res[name]), (name, res[name])
    assert res["chmod_plain"] == "ok"
    status = dict(line.split(":\t", 1) for line in res["suid_status"].splitlines() if ":\t" in line)
    assert status["CapEff"].strip() == "0000000000000000"
    assert status["CapPrm"].strip() == "0000000000000000"
    assert status["NoNewPrivs"].strip() == "1"
    worktree_mount = [m for m in res["mounts"].splitlines() if f" {ws.worktree} " in m]
    assert worktree_mount and "nosuid" in worktree_mount[0]
    for p in ws.worktree.iterdir():
        mode = p.lstat().st_mode
        assert stat.S_ISREG(mode) or stat.S_ISLNK(mode) or stat.S_ISDIR(mode), p
        if p.name != "suid-cat":
            assert not mode & (stat.S_ISUID | stat.S_ISGID), p


async def test_an_overlay_covers_a_worktree_file_read_only(ws: Workspace, run: Any) -> None:
    script = ws.worktree / "ci" / "test.sh"
    script.parent.mkdir()
    script.write_text("echo agent-version\n")
    base = ws.root / "base-test.sh"
    base.write_text("echo base-version\n")
    body = """
R["seen"] = open("ci/test.sh").read().strip()
t("write", write, "ci/test.sh")
"""
    rc, _ = await run(ws.py(attack(body), overlays=((base, script),)))
    assert rc == 0, ws.stderr()
    res = results(ws.stdout())
    assert res["seen"] == "echo base-version"
    assert failed(res["write"])
    assert script.read_text() == "echo agent-version\n"  # the worktree itself is untouched


async def test_an_overlay_outside_the_worktree_or_over_a_link_is_refused(
    ws: Workspace, run: Any
) -> None:
    base = ws.root / "base.sh"
    base.write_text("x")
    with pytest.raises(SandboxError, match="not inside the worktree"):
        await run(ws.py("pass", overlays=((base, Path("/usr/bin/env")),)))
    link = ws.worktree / "link.sh"
    link.symlink_to("/etc/hostname")
    with pytest.raises(SandboxError, match="symbolic link"):
        await run(ws.py("pass", overlays=((base, link),)))
