"""The clone cache clones a repository once, refreshes it on reuse and survives concurrency."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.git import CloneFailed, FetchFailed, InvalidRepository, RepoCache

from .conftest import Origin, sh


async def test_first_ensure_clones_and_reuse_fetches_new_commits(
    origin: Origin, tmp_path: Path
) -> None:
    cache = RepoCache(tmp_path / "cache")
    path = await cache.ensure(origin.url)
    assert sh("rev-parse", "refs/remotes/origin/main", cwd=path).strip() == origin.sha("main")

    newer = origin.commit({"new.txt": "x\n"}, "second")
    origin.commit({"f.txt": "y\n"}, "on feature", branch="feature")
    again = await cache.ensure(origin.url)

    assert again == path
    assert sh("rev-parse", "refs/remotes/origin/main", cwd=path).strip() == newer
    assert sh("rev-parse", "refs/remotes/origin/feature", cwd=path).strip() == origin.sha("feature")
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.suffix == ".git"] == [path.name]


async def test_same_repository_spelled_differently_shares_one_clone(
    origin: Origin, tmp_path: Path
) -> None:
    cache = RepoCache(tmp_path / "cache")
    a = await cache.ensure(origin.url)
    b = await cache.ensure(origin.url + "/")
    c = await cache.ensure(str(origin.bare))
    assert a == b == cache.path_for(origin.url)
    assert c != a  # a local path and a file:// URL are different locations


async def test_ten_concurrent_ensures_make_one_clone(origin: Origin, tmp_path: Path) -> None:
    cache = RepoCache(tmp_path / "cache")
    paths = await asyncio.gather(*(cache.ensure(origin.url) for _ in range(10)))
    assert len(set(paths)) == 1
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert entries == [paths[0].name, paths[0].name + ".lock"]


async def test_two_cache_objects_on_one_root_are_safe(origin: Origin, tmp_path: Path) -> None:
    """Two orchestrator processes share a root: the file lock serialises them."""
    first, second = RepoCache(tmp_path / "cache"), RepoCache(tmp_path / "cache")
    paths = await asyncio.gather(*(c.ensure(origin.url) for c in [first, second] * 3))
    assert len(set(paths)) == 1


async def test_missing_origin_is_a_clone_failure_with_no_leftovers(tmp_path: Path) -> None:
    cache = RepoCache(tmp_path / "cache")
    with pytest.raises(CloneFailed) as info:
        await cache.ensure(f"file://{tmp_path}/nowhere.git")
    assert "cannot clone" in info.value.message
    assert "nowhere.git" in info.value.message
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]


async def test_clone_failure_never_shows_url_credentials(tmp_path: Path) -> None:
    cache = RepoCache(tmp_path / "cache")
    with pytest.raises(CloneFailed) as info:
        await cache.ensure("http://deploy:hunter2token@127.0.0.1:9/org/repo.git")
    assert "hunter2token" not in str(info.value)
    assert "hunter2token" not in (info.value.stderr or "")
    assert not any("hunter2token" in p.name for p in (tmp_path / "cache").iterdir())


async def test_origin_gone_after_clone_is_a_fetch_failure(origin: Origin, tmp_path: Path) -> None:
    cache = RepoCache(tmp_path / "cache")
    await cache.ensure(origin.url)
    os.rename(origin.bare, tmp_path / "moved.git")
    with pytest.raises(FetchFailed, match="fetch from origin failed"):
        await cache.ensure(origin.url)


async def test_invalid_repository_is_refused_before_any_git_call(tmp_path: Path) -> None:
    cache = RepoCache(tmp_path / "cache")
    with pytest.raises(InvalidRepository):
        await cache.ensure("ext::sh -c 'touch pwned'")
    assert not (tmp_path / "cache").exists()


async def test_stale_temporary_clone_is_cleaned(origin: Origin, tmp_path: Path) -> None:
    cache = RepoCache(tmp_path / "cache")
    dest = cache.path_for(origin.url)
    stale = dest.parent / f".{dest.name}.tmp-dead"
    stale.mkdir(parents=True)
    await cache.ensure(origin.url)
    assert not stale.exists()
