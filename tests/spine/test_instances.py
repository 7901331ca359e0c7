"""Several instances on one Valkey share the queue, and kill-all reaches every instance."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psutil
import pytest

from core.instance import instance_name, instance_slug, sandbox_scope
from tests.spine.conftest import make_settings, running


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_work_spreads_and_kill_all_reaches_every_instance(
    tmp_path: Path, origin: Path, valkey_url: str, redis_client: object
) -> None:
    pids = tmp_path / "pids"
    command = f"echo $$ >> {pids}; exec sleep 300"
    common = {"mosaic_agent_command": command, "max_concurrent_agents": 1}
    a_settings = make_settings(tmp_path / "a", valkey_url, **common)
    b_settings = make_settings(tmp_path / "b", valkey_url, **common)
    async with running(a_settings) as a, running(b_settings) as b:
        assert a.engine.instance != b.engine.instance
        ids = [await a.spawn(f"T-multi-{i}", origin) for i in range(2)]
        for agent_id in ids:
            await a.wait_status(agent_id, "running")
        instances = {(await a.get(f"/agents/{i}/status"))[1]["instance"] for i in ids}
        assert instances == {a.engine.instance, b.engine.instance}
        while len(pids.read_text().split() if pids.exists() else []) < 2:
            await asyncio.sleep(0.05)
        procs = [int(p) for p in pids.read_text().split()]
        status, body = await a.post("/agents/kill-all")
        assert status == 200 and body["killed"] == 2
        async with asyncio.timeout(15):
            while any(_alive(p) for p in procs):
                await asyncio.sleep(0.05)
        for agent_id in ids:
            assert (await b.get(f"/agents/{agent_id}/status"))[1]["status"] == "killed"
        _, stats = await b.get("/queue/stats")
        assert stats["workers"] == 2


@pytest.mark.parametrize(
    "name", ["host:1a2b3c4d", "HOST:1a2b3c4d", "host-1a2b3c4d", "../..", "a/b c", "::", "x" * 300]
)
def test_an_instance_slug_is_a_safe_path_component_unique_to_its_name(name: str) -> None:
    slug = instance_slug(name)
    assert slug.startswith("i-") and len(slug) <= 55
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in slug)
    assert slug == instance_slug(name)  # stable across restarts
    others = {"host:1a2b3c4d", "HOST:1a2b3c4d", "host-1a2b3c4d", "../..", "a/b c", "::", "x" * 301}
    assert all(instance_slug(o) != slug for o in others - {name})


def test_each_instance_works_in_its_own_scope(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "", sandbox_cgroup_parent="mosaic")
    name = instance_name(settings)
    assert sandbox_scope(settings, name) == f"mosaic/{instance_slug(name)}"
    assert instance_slug("web-1:1a2b3c4d").startswith("i-web-1-1a2b3c4d-")
    named = make_settings(tmp_path, "", instance_name="blue", sandbox_cgroup_parent="ci/mosaic/")
    assert instance_name(named) == "blue"
    assert sandbox_scope(named, "blue") == f"ci/mosaic/{instance_slug('blue')}"
    assert sandbox_scope(named, "blue") != sandbox_scope(named, "green")
