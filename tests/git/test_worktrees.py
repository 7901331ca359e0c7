"""Each agent gets its own worktree and branch; the orchestrator commits its changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pytest_asyncio

from core.errors import ValidationFailed
from core.git import (
    BaseNotFound,
    InvalidBranch,
    RepoCache,
    Worktree,
    WorktreeError,
    commit_all,
    create_worktree,
    diff_text,
    git_metadata_paths,
    new_commits,
    prune_worktrees,
    remove_worktree,
)

from .conftest import Origin, sh

AUTHOR = {"author_name": "Mosaic Agent", "author_email": "agent@mosaic.invalid"}


@pytest_asyncio.fixture
async def cache(origin: Origin, tmp_path: Path) -> Path:
    return await RepoCache(tmp_path / "cache").ensure(origin.url)


async def test_worktree_checks_out_base_on_a_new_branch(
    cache: Path, origin: Origin, tmp_path: Path
) -> None:
    wt = await create_worktree(
        cache, tmp_path / "wt" / "T-1", branch="mosaic/worker/T-1", base="main"
    )
    assert wt.base_sha == origin.sha("main")
    assert wt.branch == "mosaic/worker/T-1" and wt.base == "main" and wt.cache == cache
    assert (wt.path / "README.md").read_text() == "hello\n"
    assert sh("symbolic-ref", "HEAD", cwd=wt.path).strip() == "refs/heads/mosaic/worker/T-1"
    await remove_worktree(wt, delete_branch=True)


async def test_two_agents_worktrees_are_isolated(cache: Path, tmp_path: Path) -> None:
    a = await create_worktree(cache, tmp_path / "a", branch="mosaic/worker/A", base="main")
    b = await create_worktree(cache, tmp_path / "b", branch="mosaic/worker/B", base="main")
    (a.path / "README.md").write_text("changed by A\n")
    (a.path / "only-a.txt").write_text("a\n")

    sha_a = await commit_all(a, "A's work", trailers={}, **AUTHOR)

    assert (b.path / "README.md").read_text() == "hello\n"
    assert not (b.path / "only-a.txt").exists()
    assert await commit_all(b, "nothing", trailers={}, **AUTHOR) is None
    assert await new_commits(b) == []
    assert await new_commits(a) == [sha_a]
    assert sh("rev-parse", "mosaic/worker/B", cwd=cache).strip() == b.base_sha


async def test_commit_includes_untracked_deleted_and_modified_files_with_trailers(
    cache: Path, tmp_path: Path
) -> None:
    wt = await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/T-2", base="main")
    (wt.path / "README.md").write_text("hello world\n")
    (wt.path / "src" / "app.py").unlink()
    (wt.path / "docs").mkdir()
    (wt.path / "docs" / "new.md").write_text("# new\n")

    sha = await commit_all(
        wt,
        "Implement US-001\n\nDetails here.",
        trailers={"Mosaic-Task": "T-2", "Mosaic-Agent": "agent-7"},
        **AUTHOR,
    )

    assert sha is not None and len(sha) == 40
    assert sh("rev-parse", "HEAD", cwd=wt.path).strip() == sha
    assert sh("log", "-1", "--format=%B", sha, cwd=cache) == (
        "Implement US-001\n\nDetails here.\n\nMosaic-Task: T-2\nMosaic-Agent: agent-7\n\n"
    )
    assert sh("log", "-1", "--format=%an <%ae>|%cn", sha, cwd=cache).strip() == (
        "Mosaic Agent <agent@mosaic.invalid>|Mosaic Agent"
    )
    trailers = sh("log", "-1", "--format=%(trailers:key=Mosaic-Task,valueonly)", sha, cwd=cache)
    assert trailers.strip() == "T-2"
    changed = sh("show", "--name-status", "--format=", sha, cwd=cache).split("\n")
    assert sorted(line for line in changed if line) == [
        "A\tdocs/new.md",
        "D\tsrc/app.py",
        "M\tREADME.md",
    ]
    assert sh("status", "--porcelain", cwd=wt.path) == ""
    diff = await diff_text(wt)
    assert "+hello world" in diff and "docs/new.md" in diff
    assert await new_commits(wt) == [sha]


async def test_no_change_commits_nothing(cache: Path, tmp_path: Path) -> None:
    wt = await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/T-3", base="main")
    assert await commit_all(wt, "summary", trailers={}, **AUTHOR) is None
    assert await new_commits(wt) == []
    assert await diff_text(wt) == ""


@pytest.mark.parametrize(
    ("message", "trailers", "author"),
    [
        ("", {}, AUTHOR),
        ("ok", {"Bad Key": "v"}, AUTHOR),
        ("ok", {"Key": "multi\nline"}, AUTHOR),
        ("ok", {"Key": " "}, AUTHOR),
        ("ok", {}, {"author_name": "", "author_email": "a@b"}),
        ("ok", {}, {"author_name": "Evil <x@y>", "author_email": "a@b"}),
    ],
)
async def test_bad_commit_input_is_a_validation_error(
    cache: Path, tmp_path: Path, message: str, trailers: dict[str, str], author: dict[str, str]
) -> None:
    wt = await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/T-4", base="main")
    (wt.path / "x.txt").write_text("x\n")
    with pytest.raises(ValidationFailed):
        await commit_all(wt, message, trailers=trailers, **author)
    assert await new_commits(wt) == []


async def test_retry_resets_existing_branch_and_replaces_leftover_worktree(
    cache: Path, tmp_path: Path, origin: Origin
) -> None:
    first = await create_worktree(cache, tmp_path / "try1", branch="mosaic/worker/T-5", base="main")
    (first.path / "x.txt").write_text("first attempt\n")
    assert await commit_all(first, "attempt 1", trailers={}, **AUTHOR)
    # the first attempt's worktree is left behind (crash); a retry uses another path
    second = await create_worktree(
        cache, tmp_path / "try2", branch="mosaic/worker/T-5", base="main"
    )
    assert await new_commits(second) == []
    assert sh("rev-parse", "mosaic/worker/T-5", cwd=cache).strip() == origin.sha("main")
    assert not first.path.exists()
    # and a retry on the same path works too
    (second.path / "dirty.txt").write_text("x")
    third = await create_worktree(cache, tmp_path / "try2", branch="mosaic/worker/T-5", base="main")
    assert not (third.path / "dirty.txt").exists()
    await remove_worktree(third, delete_branch=True)


async def test_missing_base_and_bad_names_fail_clearly(cache: Path, tmp_path: Path) -> None:
    with pytest.raises(BaseNotFound, match="'develop' does not exist in origin"):
        await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/T", base="develop")
    with pytest.raises(InvalidBranch):
        await create_worktree(cache, tmp_path / "wt", branch="bad..name", base="main")
    with pytest.raises(InvalidBranch):
        await create_worktree(cache, tmp_path / "wt", branch="ok", base="-main")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "file").write_text("mine")
    with pytest.raises(WorktreeError, match="exists and is not empty"):
        await create_worktree(cache, occupied, branch="mosaic/worker/T", base="main")
    assert (occupied / "file").read_text() == "mine"


async def test_remove_is_idempotent_and_deletes_branch_on_request(
    cache: Path, tmp_path: Path
) -> None:
    keep = await create_worktree(cache, tmp_path / "keep", branch="mosaic/worker/K", base="main")
    drop = await create_worktree(cache, tmp_path / "drop", branch="mosaic/worker/D", base="main")
    await remove_worktree(keep, delete_branch=False)
    await remove_worktree(drop, delete_branch=True)
    await remove_worktree(drop, delete_branch=True)
    assert not keep.path.exists() and not drop.path.exists()
    branches = sh("branch", "--format=%(refname:short)", cwd=cache).split()
    assert "mosaic/worker/K" in branches and "mosaic/worker/D" not in branches
    assert sh("worktree", "list", "--porcelain", cwd=cache).count("worktree ") == 1


async def test_remove_after_cache_deleted_still_cleans_the_directory(tmp_path: Path) -> None:
    path = tmp_path / "orphan"
    path.mkdir()
    (path / "f").write_text("x")
    wt = Worktree(
        path=path, branch="b", base="main", base_sha="0" * 40, cache=tmp_path / "gone.git"
    )
    await remove_worktree(wt, delete_branch=True)
    assert not path.exists()


async def test_prune_removes_every_worktree_not_kept(
    origin: Origin, tmp_path: Path, cache: Path
) -> None:
    other = await RepoCache(tmp_path / "cache").ensure(str(origin.bare))
    keep = await create_worktree(cache, tmp_path / "w1", branch="mosaic/worker/1", base="main")
    gone = await create_worktree(cache, tmp_path / "w2", branch="mosaic/worker/2", base="main")
    elsewhere = await create_worktree(other, tmp_path / "w3", branch="mosaic/worker/3", base="main")
    vanished = await create_worktree(cache, tmp_path / "w4", branch="mosaic/worker/4", base="main")
    shutil.rmtree(vanished.path)

    removed = await prune_worktrees(tmp_path / "cache", keep={keep.path})

    assert sorted(removed) == sorted([gone.path, elsewhere.path, vanished.path])
    assert keep.path.exists() and not gone.path.exists() and not elsewhere.path.exists()
    assert await prune_worktrees(tmp_path / "cache", keep={keep.path}) == []
    assert await prune_worktrees(tmp_path / "no-cache-yet", keep=set()) == []


async def test_metadata_paths_are_the_worktree_admin_files_and_nothing_of_the_cache(
    cache: Path, tmp_path: Path
) -> None:
    wt = await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/M", base="main")
    paths = git_metadata_paths(wt)
    assert wt.path / ".git" in paths
    # the cache's config (origin's URL), hooks and info are never bound into a sandbox
    for never in ("config", "hooks", "info", "objects"):
        assert not any(p == cache / never or (cache / never) in p.parents for p in paths)
    assert wt.admin is not None and wt.admin / "gitdir" in paths
    assert all(p.exists() for p in paths)
    fresh = Worktree(wt.path, wt.branch, wt.base, wt.base_sha, wt.cache)
    assert git_metadata_paths(fresh) == paths


async def test_commit_refuses_a_worktree_switched_to_another_branch(
    cache: Path, tmp_path: Path
) -> None:
    wt = await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/S", base="main")
    sh("checkout", "-q", "-b", "elsewhere", cwd=wt.path)
    (wt.path / "x").write_text("x")
    with pytest.raises(WorktreeError, match="not on branch mosaic/worker/S"):
        await commit_all(wt, "msg", trailers={}, **AUTHOR)


async def test_unregistered_worktree_is_a_clear_error(cache: Path, tmp_path: Path) -> None:
    wt = Worktree(tmp_path / "nope", "b", "main", "0" * 40, cache)
    with pytest.raises(WorktreeError, match="not a registered worktree"):
        await new_commits(wt)
