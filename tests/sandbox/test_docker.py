"""The docker backend against a real Docker Engine API (podman, see .ci/setup.d/20-docker.sh).

Engine tests skip with the reason when no engine answers on the socket; the rest still runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from sandbox.base import SandboxError, SandboxSpec
from sandbox.docker import (
    LABEL,
    SCOPE_LABEL,
    DockerProcess,
    DockerSandbox,
    container_config,
    default_socket,
)
from sandbox.identity import SANDBOX_HOME, SandboxUser

SOCKET = os.environ.get("MOSAIC_DOCKER_SOCKET", "/run/mosaic-podman.sock")
IMAGE = os.environ.get("MOSAIC_DOCKER_IMAGE", "localhost/mosaic-busybox:latest")


def _spec(tmp_path: Path, argv: list[str], **kw: object) -> SandboxSpec:
    wt = tmp_path / "wt"
    wt.mkdir(exist_ok=True)
    base: dict[str, object] = {
        "agent_id": f"dk-{uuid.uuid4().hex[:8]}",
        "argv": argv,
        "workdir": wt,
        "env": {"PATH": "/bin"},
        "log_dir": tmp_path / "logs",
    }
    base.update(kw)
    return SandboxSpec(**base)  # type: ignore[arg-type]


def test_container_config_carries_the_policy(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    (shared / "secret").mkdir(parents=True)
    hooks = tmp_path / "wt" / ".git" / "hooks"
    hooks.mkdir(parents=True)
    spec = _spec(
        tmp_path,
        ["agent"],
        ro_binds=(shared,),
        readonly_paths=(hooks, tmp_path / "missing"),
        hidden_paths=(shared / "secret",),
        memory_mb=64,
        cpu_quota=0.5,
        pids_max=10,
        env={"A": "1"},
    )
    cfg = container_config(spec, "img")
    host = cfg["HostConfig"]
    wt = str(tmp_path / "wt")
    assert host["Binds"] == [f"{wt}:{wt}:rw", f"{shared}:{shared}:ro", f"{hooks}:{hooks}:ro"]
    assert host["Tmpfs"][str(shared / "secret")].startswith("ro,")
    assert (host["Memory"], host["MemorySwap"], host["PidsLimit"], host["NanoCpus"]) == (
        64 << 20,
        64 << 20,
        10,
        500_000_000,
    )
    assert host["CapDrop"] == ["ALL"] and host["NetworkMode"] == "none" and host["ReadonlyRootfs"]
    assert cfg["NetworkDisabled"] and cfg["Env"] == ["A=1"] and cfg["WorkingDir"] == wt
    assert cfg["Labels"] == {LABEL: spec.agent_id}
    assert "User" not in cfg and host["Tmpfs"]["/tmp"].endswith(f"size={spec.tmp_mb}m")
    as_user = container_config(spec, "img", user=SandboxUser(uid=64000, gid=64001, drop=True))
    assert as_user["User"] == "64000:64001"  # never root inside the container
    assert as_user["HostConfig"]["Tmpfs"][SANDBOX_HOME].startswith("rw,nosuid,nodev,")
    assert (
        "NanoCpus"
        not in container_config(_spec(tmp_path, ["a"], cpu_quota=None), "i")["HostConfig"]
    )


def test_containers_carry_their_instance_scope(tmp_path: Path) -> None:
    spec = _spec(tmp_path, ["agent"])
    labels = container_config(spec, "img", "mosaic/i-host-1a2b3c4d-0123456789")["Labels"]
    assert labels == {LABEL: spec.agent_id, SCOPE_LABEL: "mosaic/i-host-1a2b3c4d-0123456789"}


@pytest_asyncio.fixture
async def fake_engine() -> AsyncIterator[tuple[str, list[dict[str, Any]], list[str]]]:
    """A Docker Engine API stand-in on a Unix socket holding containers of several instances.

    It ignores the list filters (as a careless engine might): the reaper must not rely on them.
    Yields the socket, the requests' query strings and the ids of deleted containers.
    """
    containers = [
        {"Id": "c-mine-lost", "Labels": {LABEL: "lost", SCOPE_LABEL: "mosaic/i-mine"}},
        {"Id": "c-mine-live", "Labels": {LABEL: "live", SCOPE_LABEL: "mosaic/i-mine"}},
        {"Id": "c-other", "Labels": {LABEL: "theirs", SCOPE_LABEL: "mosaic/i-other"}},
        {"Id": "c-unscoped", "Labels": {LABEL: "unknown-owner"}},
        {"Id": "c-unrelated", "Labels": {}},
    ]
    queries: list[dict[str, Any]] = []
    deleted: list[str] = []

    async def list_containers(request: web.Request) -> web.Response:
        queries.append(dict(request.query))
        return web.json_response(containers)

    async def delete(request: web.Request) -> web.Response:
        deleted.append(request.match_info["cid"])
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/v1.41/containers/json", list_containers)
    app.router.add_delete("/v1.41/containers/{cid}", delete)
    runner = web.AppRunner(app)
    await runner.setup()
    short = tempfile.mkdtemp(prefix="mosaic-dk-")  # Unix socket paths are short
    try:
        socket = os.path.join(short, "engine.sock")
        await web.UnixSite(runner, socket).start()
        yield socket, queries, deleted
    finally:
        await runner.cleanup()
        shutil.rmtree(short, ignore_errors=True)


async def test_reap_orphans_sees_only_its_own_instances_containers(
    fake_engine: tuple[str, list[dict[str, Any]], list[str]],
) -> None:
    socket, queries, deleted = fake_engine
    mine = DockerSandbox(socket=socket, image="img", scope="mosaic/i-mine")
    assert await mine.reap_orphans({"live"}) == ["lost"]
    assert deleted == ["c-mine-lost"]  # not the other instance's, nor the unscoped one
    assert json.loads(queries[0]["filters"]) == {"label": [LABEL, f"{SCOPE_LABEL}=mosaic/i-mine"]}
    other = DockerSandbox(socket=socket, image="img", scope="mosaic/i-other")
    assert await other.reap_orphans(set()) == ["theirs"]
    assert deleted == ["c-mine-lost", "c-other"]


def test_default_socket_follows_docker_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/d.sock")
    assert default_socket() == "/tmp/d.sock"
    monkeypatch.setenv("DOCKER_HOST", "tcp://x:2375")
    assert default_socket() == "/var/run/docker.sock"


async def test_unreachable_engine_is_reported_not_raised(tmp_path: Path) -> None:
    sandbox = DockerSandbox(socket=str(tmp_path / "nope.sock"), image=IMAGE)
    health = await sandbox.health()
    assert not health.ok and "cannot reach the Docker engine" in health.detail
    with pytest.raises(SandboxError, match="cannot reach the Docker engine"):
        await sandbox.start(_spec(tmp_path, ["true"]))


@pytest_asyncio.fixture
async def docker() -> AsyncIterator[DockerSandbox]:
    sandbox = DockerSandbox(socket=SOCKET, image=IMAGE)
    health = await sandbox.health()
    if not health.ok:
        pytest.skip(f"no Docker engine: {health.detail} (run .ci/setup.d/20-docker.sh)")
    yield sandbox


async def _run(sb: DockerSandbox, spec: SandboxSpec) -> tuple[int, DockerProcess]:
    proc = await sb.start(spec)
    try:
        rc = await asyncio.wait_for(proc.wait(), 60)
    finally:
        await proc.cleanup()
    return rc, proc


async def test_runs_with_logs_env_worktree_and_no_network(
    docker: DockerSandbox, tmp_path: Path
) -> None:
    script = (
        "echo err >&2; echo made > f; pwd; echo FOO=$FOO; ls /sys/class/net; "
        "grep CapEff /proc/self/status; touch /rootfs-write 2>/dev/null || echo rootfs-ro; exit 3"
    )
    spec = _spec(tmp_path, ["sh", "-c", script], env={"PATH": "/bin", "FOO": "bar"})
    rc, proc = await _run(docker, spec)
    assert rc == 3
    out = (spec.log_dir / "stdout.log").read_text().split()
    assert out[:3] == [str(spec.workdir), "FOO=bar", "lo"]
    assert "0000000000000000" in out and "rootfs-ro" in out
    assert (spec.log_dir / "stderr.log").read_text() == "err\n"
    assert (spec.workdir / "f").read_text() == "made\n"
    assert proc.handle["backend"] == "docker" and proc.pid is None
    await proc.cleanup()  # idempotent
    await proc.kill()


async def test_readonly_paths_and_hidden_paths(docker: DockerSandbox, tmp_path: Path) -> None:
    spec = _spec(tmp_path, ["true"])
    hooks = spec.workdir / ".git" / "hooks"
    hooks.mkdir(parents=True)
    script = "echo x > .git/hooks/pre-commit 2>/dev/null || echo refused"
    spec = _spec(tmp_path, ["sh", "-c", script], readonly_paths=(hooks,))
    rc, _ = await _run(docker, spec)
    assert rc == 0
    assert (spec.log_dir / "stdout.log").read_text() == "refused\n"
    assert list(hooks.iterdir()) == []


async def test_memory_hog_is_oom_killed(docker: DockerSandbox, tmp_path: Path) -> None:
    # Bounded hog as the container's main process (the engine reports OOM for that process):
    # doubles a string up to ~300 MB at most.
    hog = 'BEGIN { s = "x"; while (length(s) < 300000000) s = s s; print length(s) }'
    spec = _spec(tmp_path, ["awk", hog], memory_mb=48)
    rc, proc = await _run(docker, spec)
    assert rc == 137  # SIGKILLed by the kernel at the limit
    assert (spec.log_dir / "stdout.log").read_text() == ""
    _, version = await docker.client.request("GET", "/version")
    if "Podman" not in str(version):
        # Docker reports State.OOMKilled; podman 4.3 with runc on cgroup v1 does not.
        assert (await proc.stats()).oom_killed


async def test_kill_stops_with_grace_then_removes(docker: DockerSandbox, tmp_path: Path) -> None:
    spec = _spec(tmp_path, ["sh", "-c", "trap 'echo bye; exit 0' TERM; touch ready; "
                            "while :; do sleep 0.1; done"])  # fmt: skip
    proc = await docker.start(spec)
    for _ in range(500):
        if (spec.workdir / "ready").exists():
            break
        await asyncio.sleep(0.02)
    stats = await proc.stats()
    assert stats.pids >= 1
    await proc.kill(grace_s=5)
    assert await proc.wait() == 0
    await proc.cleanup()
    assert (spec.log_dir / "stdout.log").read_text() == "bye\n"
    assert await docker.reap_orphans(set()) == []


async def test_signal_is_delivered(docker: DockerSandbox, tmp_path: Path) -> None:
    import signal

    spec = _spec(
        tmp_path, ["sh", "-c", "trap 'exit 7' USR1; touch ready; while :; do sleep 0.1; done"]
    )
    proc = await docker.start(spec)
    try:
        for _ in range(500):
            if (spec.workdir / "ready").exists():
                break
            await asyncio.sleep(0.02)
        proc.signal(signal.SIGUSR1)
        assert await asyncio.wait_for(proc.wait(), 30) == 7
    finally:
        await proc.cleanup()


async def test_reap_orphans_removes_containers_of_dead_agents(
    docker: DockerSandbox, tmp_path: Path
) -> None:
    live = await docker.start(_spec(tmp_path, ["sleep", "60"], agent_id="dk-live"))
    lost = await docker.start(_spec(tmp_path, ["sleep", "60"], agent_id="dk-lost"))
    try:
        restarted = DockerSandbox(socket=SOCKET, image=IMAGE)
        assert await restarted.reap_orphans({"dk-live"}) == ["dk-lost"]
        assert (await lost.stats()).pids == 0
    finally:
        await live.kill(grace_s=0)
        await live.cleanup()
        await lost.cleanup()


async def test_reap_orphans_spares_another_instances_containers(
    tmp_path: Path,
) -> None:
    theirs = DockerSandbox(socket=SOCKET, image=IMAGE, scope=f"mosaic-test/i-{uuid.uuid4().hex}")
    health = await theirs.health()
    if not health.ok:
        pytest.skip(f"no Docker engine: {health.detail} (run .ci/setup.d/20-docker.sh)")
    proc = await theirs.start(_spec(tmp_path, ["sleep", "60"]))
    try:
        mine = DockerSandbox(socket=SOCKET, image=IMAGE, scope=f"mosaic-test/i-{uuid.uuid4().hex}")
        assert await mine.reap_orphans(set()) == []
        assert (await proc.stats()).pids >= 1
        assert await theirs.reap_orphans({proc.agent_id}) == []
    finally:
        await proc.kill(grace_s=0)
        await proc.cleanup()


async def test_missing_image_is_a_clear_error(docker: DockerSandbox, tmp_path: Path) -> None:
    sandbox = DockerSandbox(socket=SOCKET, image="localhost/does-not-exist:1")
    health = await sandbox.health()
    assert not health.ok and "not found" in health.detail
    with pytest.raises(SandboxError, match="Docker engine"):
        await sandbox.start(_spec(tmp_path, ["true"]))
