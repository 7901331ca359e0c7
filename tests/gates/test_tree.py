"""Source trees: the worktree on disk and a commit read through git answer the same questions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import core.gates.tree as tree_mod
from core.gates.tree import CommitTree, Entry, TreeError, WorktreeTree, is_dir, is_file
from core.safeio import RefusedFile
from tests.gates.conftest import commit_all, git, make_python_repo


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    repo = make_python_repo(tmp_path / "repo")
    (repo / "tests" / "integration").mkdir()
    (repo / "tests" / "integration" / "test_flow.py").write_text("def test_x() -> None: ...\n")
    (repo / "ci").mkdir()
    (repo / "ci" / "test.sh").write_text("#!/bin/sh\nexit 0\n")
    (repo / "ci" / "test.sh").chmod(0o755)
    (repo / "link.toml").symlink_to("pyproject.toml")
    commit_all(repo, "more files")
    return repo


def walked(tree: WorktreeTree | CommitTree) -> set[str]:
    out = set()
    for top, dirnames, filenames in tree.walk():
        dirnames[:] = [d for d in dirnames if d != ".git"]
        out |= {f"{top}/{f}" if top else f for f in filenames}
    return out


def test_both_trees_see_the_same_files(repo: Path) -> None:
    disk, commit = WorktreeTree(repo), CommitTree(repo, "HEAD")
    assert commit.sha == git(repo, "rev-parse", "HEAD")
    assert commit.label == f"commit {commit.sha[:12]}" and disk.label == "the worktree"
    for tree in (disk, commit):
        assert is_file(tree, "pyproject.toml") and is_file(tree, "tests/integration/test_flow.py")
        assert is_dir(tree, "tests/integration") and is_dir(tree, "") and is_dir(tree, "./ci")
        assert tree.entry("nope") is None and tree.entry("tests/nope/x") is None
        assert tree.entry("pyproject.toml/x") is None
        assert tree.entry("link.toml") == Entry("link", oid=tree.entry("link.toml").oid)  # type: ignore[union-attr]
        found = tree.entry("ci/test.sh")
        assert found is not None and found.kind == "file" and found.executable
        assert tree.read("ci/test.sh", 100) == b"#!/bin/sh\nexit 0\n"
        assert tree.read("missing.txt", 100) is None
        with pytest.raises(RefusedFile, match="larger than"):
            tree.read("pyproject.toml", 10)
        with pytest.raises(RefusedFile, match="symbolic link"):
            tree.read("link.toml", 1000)
        listing = tree.list_dir("")
        assert listing["sample"].kind == "dir" and listing["pyproject.toml"].kind == "file"
        assert tree.list_dir("pyproject.toml") == {} and tree.list_dir("nope") == {}
    assert walked(disk) - {".gitignore"} == walked(commit) - {".gitignore"}
    assert "sample/calc.py" in walked(commit)


def test_a_commit_is_read_as_committed_whatever_the_worktree_holds(repo: Path) -> None:
    base = git(repo, "rev-parse", "HEAD")
    (repo / "ci" / "test.sh").write_text("exit 0 # weakened\n")
    os.remove(repo / "pyproject.toml")
    commit_all(repo, "agent")
    (repo / "sample" / "calc.py").write_text("broken(\n")
    tree = CommitTree(repo, base)
    assert tree.read("ci/test.sh", 100) == b"#!/bin/sh\nexit 0\n"
    assert is_file(tree, "pyproject.toml") and not is_file(WorktreeTree(repo), "pyproject.toml")
    assert b"def add" in (tree.read("sample/calc.py", 10_000) or b"")


def test_a_cut_listing_falls_back_to_one_directory_at_a_time(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tree_mod, "INDEX_MAX_ENTRIES", 2)
    tree = CommitTree(repo, "HEAD")
    assert is_file(tree, "tests/integration/test_flow.py") and is_file(tree, "sample/calc.py")
    assert tree.entry("sample/nope.py") is None
    assert tree.read("ci/test.sh", 100) == b"#!/bin/sh\nexit 0\n"
    # a bounded walk: only what the cut listing holds
    assert len(walked(tree)) <= 2


def test_a_huge_listing_is_cut_by_bytes(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tree_mod, "INDEX_MAX_BYTES", 120)
    tree = CommitTree(repo, "HEAD")
    assert len(walked(tree)) < 3
    assert is_file(tree, "tests/test_calc.py")


@pytest.mark.parametrize("ref", ["f" * 40, "-rf", "HEAD~5", "no such branch"])
def test_unknown_or_hostile_commits_are_tree_errors(repo: Path, ref: str) -> None:
    with pytest.raises(TreeError):
        CommitTree(repo, ref)


def test_a_worktree_never_follows_a_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    work = tmp_path / "work"
    work.mkdir()
    (work / "dir").symlink_to(outside)
    tree = WorktreeTree(work)
    assert tree.entry("dir") == Entry("link")
    assert tree.entry("dir/secret.txt") is None
    assert tree.list_dir("dir") == {}
    with pytest.raises(RefusedFile):
        tree.read("dir/secret.txt", 100)
    with pytest.raises(RefusedFile):
        tree.entry("../outside/secret.txt")
