"""Kept work: a failed or killed agent's changes survive in ``refs/mosaic/kept/<agentId>``."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from core.gc import collect_garbage
from core.git import RepoCache, create_worktree
from core.git.kept import expire_kept, kept_commit
from core.paths import StatePaths
from mosaic_tui.cli import main
from tests.conftest import git
from tests.e2e.gate_repos import declare_no_tools
from tests.spine.conftest import Orchestrator, OrchestratorFactory


def _cache(orch: Orchestrator, origin: Path) -> Path:
    return RepoCache(orch.engine.spawner.paths.repos).path_for(str(origin))


async def _kept(orch: Orchestrator, origin: Path, agent_id: str) -> str | None:
    """The kept commit, once the agent's run has cleaned up (its worktree is gone)."""
    worktree = orch.engine.spawner.paths.worktree(agent_id)
    for _ in range(1000):
        if not worktree.exists() and agent_id not in orch.engine.spawner.live:
            break
        await asyncio.sleep(0.02)
    return await kept_commit(_cache(orch, origin), agent_id)


def _kept_files(cache: Path, sha: str) -> dict[str, str]:
    names = git("--git-dir", str(cache), "ls-tree", "-r", "--name-only", sha).split()
    return {n: git("--git-dir", str(cache), "show", f"{sha}:{n}") for n in names}


async def test_a_failed_agents_changes_are_kept_not_pushed(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    work = "echo draft > notes.md; mkdir -p src; echo 'x = 1' > src/new.py; exit 3"
    async with orchestrator_factory(mosaic_agent_command=work, sandbox_backend="bwrap") as orch:
        agent_id = await orch.spawn("T-kept-failed", origin)
        data = await orch.wait_status(agent_id, "failed", "completed", timeout=60)
        assert data["status"] == "failed", data
        cache = _cache(orch, origin)
        sha = await _kept(orch, origin, agent_id)
        assert sha is not None, "the failed agent's work was lost"
        files = _kept_files(cache, sha)
        assert files["notes.md"].strip() == "draft" and files["src/new.py"].strip() == "x = 1"
        pushed = git("--git-dir", str(origin), "for-each-ref", "--format=%(refname)")
        assert "mosaic" not in pushed  # kept, never pushed
        assert not orch.engine.spawner.paths.worktree(agent_id).exists()  # no worktree kept


async def test_a_killed_agents_changes_are_kept(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    work = "echo half-done > wip.txt; touch started; sleep 300"
    async with orchestrator_factory(mosaic_agent_command=work, sandbox_backend="bwrap") as orch:
        agent_id = await orch.spawn("T-kept-killed", origin)
        await orch.wait_status(agent_id, "running", timeout=60)
        worktree = orch.engine.spawner.paths.worktree(agent_id)
        for _ in range(500):
            if (worktree / "started").exists():
                break
            await asyncio.sleep(0.02)
        status, _ = await orch.post(f"/agents/{agent_id}/kill")
        assert status == 200
        cache = _cache(orch, origin)
        sha = await _kept(orch, origin, agent_id)
        assert sha is not None
        assert _kept_files(cache, sha)["wip.txt"].strip() == "half-done"


async def test_nothing_is_kept_when_nothing_changed_or_the_work_was_pushed(
    orchestrator_factory: OrchestratorFactory, origin: Path, tmp_path: Path
) -> None:
    declare_no_tools(origin, tmp_path)  # no gate to run: the worker's change is pushed
    async with orchestrator_factory(mosaic_agent_command="exit 4") as orch:
        idle = await orch.spawn("T-kept-idle", origin)
        await orch.wait_status(idle, "failed", timeout=60)
        assert await _kept(orch, origin, idle) is None
    async with orchestrator_factory(mosaic_agent_command="echo done > done.txt") as orch:
        pushed = await orch.spawn("T-kept-pushed", origin)
        data = await orch.wait_status(pushed, "completed", "failed", timeout=60)
        assert data["status"] == "completed", data
        assert await _kept(orch, origin, pushed) is None


async def test_kept_refs_expire(orchestrator_factory: OrchestratorFactory, origin: Path) -> None:
    async with orchestrator_factory(mosaic_agent_command="echo x > f.txt; exit 1") as orch:
        agent_id = await orch.spawn("T-kept-expire", origin)
        await orch.wait_status(agent_id, "failed", timeout=60)
        cache = _cache(orch, origin)
        assert await _kept(orch, origin, agent_id) is not None
        assert await expire_kept(cache, 3600) == []  # young: stays
        assert await expire_kept(cache, 3600, now=4_000_000_000) == [agent_id]
        assert await kept_commit(cache, agent_id) is None


async def test_gc_keeps_an_orphans_work_then_expires_it_and_the_stale_clone(
    tmp_path: Path, origin: Path
) -> None:
    paths = StatePaths(tmp_path / "state")
    paths.create()
    cache = await RepoCache(paths.repos).ensure(str(origin))
    orphan = await create_worktree(
        cache, paths.worktree("agent-orphan"), branch="mosaic/worker/T-orphan", base="main"
    )
    (orphan.path / "unsaved.txt").write_text("work of a crashed instance\n")
    author = ("Mosaic Orchestrator", "orchestrator@mosaic.local")

    report = await collect_garbage(paths, keep_days=14, live=set(), author=author)
    assert report.removed_worktrees == [orphan.path] and not orphan.path.exists()
    sha = await kept_commit(cache, "agent-orphan")
    assert sha is not None
    assert _kept_files(cache, sha)["unsaved.txt"] == "work of a crashed instance"
    assert report.removed_clones == []  # it holds kept work

    later = time.time() + 15 * 86_400
    report = await collect_garbage(paths, keep_days=14, live=set(), author=author, now=later)
    assert report.expired_kept == ["agent-orphan"]
    assert report.removed_clones == [cache] and not cache.exists()


def test_the_gc_command_runs_on_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOSAIC_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "state" / "repos").mkdir(parents=True)
    assert main(["gc"]) == 0
    assert "gc: 0 kept ref(s) expired" in capsys.readouterr().out


async def test_gc_removes_orphan_agent_io_dirs_after_a_day(tmp_path: Path) -> None:
    """A crash can leave an agent's I/O dir (sockets, a claude-code HOME) behind: gc removes
    those of no live agent once a day old, and leaves a live agent's and recent ones."""
    import os

    from core.gc import IO_GRACE_S, collect_garbage
    from core.paths import StatePaths

    paths = StatePaths(tmp_path / "state")
    paths.create()
    io = tmp_path / "io"
    for name in ("dead", "dead.home", "live.home", "young"):
        (io / name).mkdir(parents=True)
    old = 1_000_000.0
    for name in ("dead", "dead.home", "live.home"):
        os.utime(io / name, (old, old))
    report = await collect_garbage(
        paths, keep_days=14, live={"live"}, author=("t", "t@x"), now=old + IO_GRACE_S + 1,
        io_root=io,
    )  # fmt: skip
    assert sorted(p.name for p in report.removed_io) == ["dead", "dead.home"]
    assert sorted(p.name for p in io.iterdir()) == ["live.home", "young"]
