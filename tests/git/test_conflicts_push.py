"""Before pushing, the orchestrator checks for conflicts with the target; then it pushes."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from core.git import (
    BaseNotFound,
    InvalidBranch,
    PushRejected,
    RepoCache,
    Worktree,
    check_conflicts,
    commit_all,
    create_worktree,
    push,
)

from .conftest import Origin, sh

AUTHOR = {"author_name": "Mosaic Agent", "author_email": "agent@mosaic.invalid"}


@pytest_asyncio.fixture
async def wt(origin: Origin, tmp_path: Path) -> Worktree:
    cache = await RepoCache(tmp_path / "cache").ensure(origin.url)
    return await create_worktree(cache, tmp_path / "wt", branch="mosaic/worker/T-1", base="main")


async def agent_edits(wt: Worktree, files: dict[str, str]) -> str:
    for name, content in files.items():
        (wt.path / name).parent.mkdir(parents=True, exist_ok=True)
        (wt.path / name).write_text(content)
    sha = await commit_all(wt, "agent work", trailers={}, **AUTHOR)
    assert sha is not None
    return sha


async def test_clean_merge_reports_no_conflict(wt: Worktree, origin: Origin) -> None:
    await agent_edits(wt, {"README.md": "hello from agent\n"})
    origin.commit({"other.txt": "someone else\n"}, "unrelated change")
    assert await check_conflicts(wt, "main") == []


async def test_conflict_lists_exactly_the_conflicting_files(wt: Worktree, origin: Origin) -> None:
    head = await agent_edits(
        wt, {"README.md": "agent\n", "src/app.py": "print('agent')\n", "ok.txt": "fine\n"}
    )
    status_before = sh("status", "--porcelain", cwd=wt.path)
    origin.commit({"README.md": "upstream\n", "src/app.py": "print('up')\n", "z.txt": "z\n"})

    assert await check_conflicts(wt, "main") == ["README.md", "src/app.py"]

    # nothing in the agent's checkout was touched
    assert sh("rev-parse", "HEAD", cwd=wt.path).strip() == head
    assert sh("status", "--porcelain", cwd=wt.path) == status_before == ""
    assert (wt.path / "README.md").read_text() == "agent\n"


async def test_conflict_check_sees_the_latest_target(wt: Worktree, origin: Origin) -> None:
    await agent_edits(wt, {"README.md": "agent\n"})
    assert await check_conflicts(wt, "main") == []
    origin.commit({"README.md": "upstream moved on\n"})
    assert await check_conflicts(wt, "main") == ["README.md"]


async def test_conflict_against_another_target_branch(wt: Worktree, origin: Origin) -> None:
    origin.commit({"README.md": "release\n"}, "release work", branch="release/1.0")
    await agent_edits(wt, {"README.md": "agent\n"})
    assert await check_conflicts(wt, "release/1.0") == ["README.md"]
    assert await check_conflicts(wt, "main") == []


async def test_missing_or_invalid_target_is_a_clear_error(wt: Worktree) -> None:
    with pytest.raises(BaseNotFound, match="'nope' does not exist in origin"):
        await check_conflicts(wt, "nope")
    with pytest.raises(InvalidBranch):
        await check_conflicts(wt, "--upload-pack=x")


async def test_push_lands_in_origin(wt: Worktree, origin: Origin) -> None:
    sha = await agent_edits(wt, {"feature.py": "x = 1\n"})
    await push(wt)
    assert origin.sha("refs/heads/mosaic/worker/T-1") == sha
    tree = sh("ls-tree", "-r", "--name-only", "mosaic/worker/T-1", cwd=origin.bare).split()
    assert "feature.py" in tree


async def test_retry_replaces_its_own_previous_push(
    wt: Worktree, origin: Origin, tmp_path: Path
) -> None:
    await agent_edits(wt, {"attempt.txt": "1\n"})
    await push(wt)
    cache = await RepoCache(tmp_path / "cache").ensure(origin.url)
    retry = await create_worktree(cache, tmp_path / "wt2", branch="mosaic/worker/T-1", base="main")
    second = await agent_edits(retry, {"attempt.txt": "2\n"})
    await push(retry)
    assert origin.sha("refs/heads/mosaic/worker/T-1") == second


async def test_push_never_overwrites_someone_elses_newer_work(wt: Worktree, origin: Origin) -> None:
    await agent_edits(wt, {"mine.txt": "agent\n"})
    theirs = origin.commit({"theirs.txt": "human\n"}, "human work", branch="mosaic/worker/T-1")
    with pytest.raises(PushRejected, match="push of mosaic/worker/T-1 to origin rejected") as info:
        await push(wt)
    assert "stale info" in info.value.message
    assert origin.sha("refs/heads/mosaic/worker/T-1") == theirs


async def test_push_refused_by_origin_policy_is_a_clear_failure(
    wt: Worktree, origin: Origin, tmp_path: Path
) -> None:
    await agent_edits(wt, {"a.txt": "1\n"})
    await push(wt)
    sh("config", "receive.denyNonFastForwards", "true", cwd=origin.bare)
    cache = await RepoCache(tmp_path / "cache").ensure(origin.url)
    retry = await create_worktree(cache, tmp_path / "wt2", branch="mosaic/worker/T-1", base="main")
    await agent_edits(retry, {"b.txt": "2\n"})
    with pytest.raises(PushRejected, match="rejected"):
        await push(retry)


async def test_push_to_unreachable_origin_fails_clearly(wt: Worktree, origin: Origin) -> None:
    await agent_edits(wt, {"a.txt": "1\n"})
    origin.bare.rename(origin.bare.with_name("moved.git"))
    with pytest.raises(PushRejected, match="push of mosaic/worker/T-1 to origin rejected"):
        await push(wt)
