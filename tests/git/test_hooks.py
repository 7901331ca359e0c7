"""The orchestrator never runs repository hooks, whoever planted them."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from core.git import RepoCache, check_conflicts, commit_all, create_worktree, push, remove_worktree

from .conftest import Origin, sh

HOOKS = [
    "pre-commit",
    "prepare-commit-msg",
    "commit-msg",
    "post-commit",
    "post-checkout",
    "reference-transaction",
    "pre-push",
    "post-index-change",
    "pre-receive",
    "update",
    "post-receive",
    "post-update",
    "fsmonitor-watchman",
]


def plant(hooks_dir: Path, marker: Path) -> None:
    hooks_dir.mkdir(parents=True, exist_ok=True)
    for name in HOOKS:
        hook = hooks_dir / name
        hook.write_text(f"#!/bin/sh\necho {name} >> {marker}\nexit 1\n")
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.mark.parametrize("remote", ["url", "path"])
async def test_no_hook_runs_anywhere(origin: Origin, tmp_path: Path, remote: str) -> None:
    marker = tmp_path / "HOOK-RAN"
    # hooks planted in the origin (server side) and, via the cache, by an agent
    plant(origin.bare / "hooks", marker)
    cache = await RepoCache(tmp_path / "cache").ensure(
        origin.url if remote == "url" else str(origin.bare)
    )
    plant(cache / "hooks", marker)
    evil = tmp_path / "evil-hooks"
    plant(evil, marker)
    sh("config", "core.hooksPath", str(evil), cwd=cache)
    sh("config", "core.fsmonitor", str(evil / "fsmonitor-watchman"), cwd=cache)

    wt = await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/H", base="main")
    (wt.path / "new.txt").write_text("agent work\n")
    sha = await commit_all(wt, "work", trailers={}, author_name="A", author_email="a@b.c")
    assert await check_conflicts(wt, "main") == []
    await push(wt)
    await remove_worktree(wt, delete_branch=True)

    assert not marker.exists(), marker.read_text()
    assert origin.sha("refs/heads/mosaic/worker/H") == sha


async def test_rewritten_dotgit_file_is_not_trusted(origin: Origin, tmp_path: Path) -> None:
    """An agent pointing its worktree's .git file at a gitdir it controls gains nothing."""
    marker = tmp_path / "HOOK-RAN"
    cache = await RepoCache(tmp_path / "cache").ensure(origin.url)
    wt = await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/G", base="main")
    fake = tmp_path / "fake-gitdir"
    sh("init", "-q", "--bare", str(fake))
    plant(fake / "hooks", marker)
    sh("config", "core.fsmonitor", str(fake / "hooks" / "fsmonitor-watchman"), cwd=fake)
    (wt.path / ".git").write_text(f"gitdir: {fake}\n")
    (wt.path / "work.txt").write_text("x\n")

    sha = await commit_all(wt, "work", trailers={}, author_name="A", author_email="a@b.c")

    assert not marker.exists()
    assert sha is not None
    assert sh("rev-parse", "mosaic/worker/G", cwd=cache).strip() == sha
