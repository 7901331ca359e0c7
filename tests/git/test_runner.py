"""The git runner ignores a hostile environment; locks serialise and time out clearly."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.git import GitError, RepoCache, create_worktree
from core.git.locks import repo_lock
from core.git.runner import git, redact

from .conftest import Origin


async def test_inherited_git_environment_cannot_redirect_commands(
    origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = tmp_path / "decoy.git"
    monkeypatch.setenv("GIT_DIR", str(decoy))
    monkeypatch.setenv("GIT_CONFIG_PARAMETERS", "'core.hooksPath'='/tmp/evil'")
    out = await git("rev-parse", "--absolute-git-dir", cwd=origin.dev)
    assert out.strip() == str(origin.dev / ".git")
    assert not decoy.exists()


async def test_failures_carry_a_readable_redacted_message(tmp_path: Path) -> None:
    with pytest.raises(GitError) as info:
        await git("ls-remote", "http://bot:t0ps3cret@127.0.0.1:9/x.git", cwd=tmp_path)
    assert "failed (exit" in info.value.message
    assert "t0ps3cret" not in str(info.value) and "t0ps3cret" not in (info.value.command or "")
    assert (
        redact("see https://u:p@h/x and ssh://git@h/y") == "see https://***@h/x and ssh://***@h/y"
    )


async def test_lock_times_out_with_a_clear_error(tmp_path: Path) -> None:
    cache = tmp_path / "repo.git"
    async with repo_lock(cache):
        with pytest.raises(GitError, match=r"timed out .* waiting for the lock"):
            async with repo_lock(cache, timeout=0.05):
                pass
    async with repo_lock(cache, timeout=0.05):
        pass


async def test_lock_in_a_missing_directory_is_a_git_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="cannot open lock file"):
        async with repo_lock(tmp_path / "missing" / "repo.git"):
            pass


async def test_concurrent_worktrees_on_one_cache(origin: Origin, tmp_path: Path) -> None:
    cache = await RepoCache(tmp_path / "cache").ensure(origin.url)
    wts = await asyncio.gather(
        *(
            create_worktree(cache, tmp_path / f"wt{i}", branch=f"mosaic/worker/T-{i}", base="main")
            for i in range(6)
        )
    )
    assert len({wt.path for wt in wts}) == 6
    assert all((wt.path / "README.md").exists() for wt in wts)
