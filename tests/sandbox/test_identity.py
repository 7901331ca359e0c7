"""The sandbox user: who agents run as, what it can reach, what it is handed."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.base import SandboxError
from sandbox.identity import DEFAULT_SANDBOX_UID, SandboxUser

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="only root switches users")


def test_never_root() -> None:
    with pytest.raises(SandboxError, match="must not be 0"):
        SandboxUser.resolve(0, None)
    with pytest.raises(SandboxError, match="must not be 0"):
        SandboxUser.resolve(None, 0)


@root_only
def test_root_drops_to_the_default_or_the_configured_user() -> None:
    assert SandboxUser.resolve() == SandboxUser(DEFAULT_SANDBOX_UID, DEFAULT_SANDBOX_UID, True)
    assert SandboxUser.resolve(5000, 5001) == SandboxUser(5000, 5001, True)


def test_passwd_and_group_name_the_agent_and_its_home() -> None:
    user = SandboxUser(1234, 4321, True)
    assert "agent:x:1234:4321:Mosaic agent:/home/agent:/bin/sh" in user.passwd()
    assert "agent:x:4321:" in user.group()


@pytest.fixture
def top() -> Iterator[Path]:
    """A directory right under /tmp (pytest's own tmp dirs sit below a 0700 directory)."""
    path = Path(tempfile.mkdtemp(dir="/tmp", prefix="mosaic-identity-"))
    yield path
    shutil.rmtree(path)


@root_only
def test_can_reach_follows_the_search_bits_on_the_way(top: Path) -> None:
    tmp_path = top
    user = SandboxUser(DEFAULT_SANDBOX_UID, DEFAULT_SANDBOX_UID, True)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    (open_dir / "f").write_text("x")
    tmp_path.chmod(0o700)
    assert not user.can_reach(open_dir / "f")  # tmp_path is root's 0700
    tmp_path.chmod(0o711)
    assert user.can_reach(open_dir / "f")
    assert not user.can_reach(open_dir / "f", write=True)
    assert not user.can_reach(open_dir / "missing")
    own = open_dir / "own"
    own.mkdir(mode=0o700)
    os.chown(own, DEFAULT_SANDBOX_UID, 0)
    assert user.can_reach(own, write=True)
    grp = open_dir / "grp"
    grp.mkdir()
    grp.chmod(0o770)
    os.chown(grp, 0, DEFAULT_SANDBOX_UID)
    assert user.can_reach(grp, write=True)
    assert not user.can_reach(open_dir / "f", execute=True)


@root_only
def test_grant_hands_a_tree_over_without_following_links(tmp_path: Path) -> None:
    user = SandboxUser(DEFAULT_SANDBOX_UID, DEFAULT_SANDBOX_UID, True)
    host_file = tmp_path / "host-only"
    host_file.write_text("root's")
    tree = tmp_path / "wt"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.py").write_text("x")
    (tree / "link").symlink_to(host_file)
    hard = tree / "hard"
    os.link(host_file, hard)
    user.grant(tree)
    for path in (tree, tree / "sub", tree / "sub" / "a.py"):
        assert path.stat().st_uid == DEFAULT_SANDBOX_UID
    assert (tree / "link").lstat().st_uid == DEFAULT_SANDBOX_UID
    assert host_file.stat().st_uid == 0  # neither the link's target nor a hard-linked file
    with pytest.raises(SandboxError, match="symbolic link"):
        user.grant(tree / "link")
    user.grant(tmp_path / "missing")  # nothing to hand over


def test_without_root_the_own_uid_is_the_sandbox_user_and_nothing_changes(tmp_path: Path) -> None:
    user = SandboxUser(os.getuid(), os.getgid(), False)
    assert user.can_reach("/nonexistent/anything")  # bwrap runs as us: nothing to stage
    user.grant(tmp_path)
    assert tmp_path.stat().st_uid == os.getuid()
