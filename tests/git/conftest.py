"""Real git repositories for the git-layer tests: a bare origin with a seeded main branch."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "Origin Dev",
    "GIT_AUTHOR_EMAIL": "dev@example.org",
    "GIT_COMMITTER_NAME": "Origin Dev",
    "GIT_COMMITTER_EMAIL": "dev@example.org",
}


def sh(*args: str, cwd: Path | None = None) -> str:
    """Run git synchronously for test set-up (the code under test never does this)."""
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass
class Origin:
    """A bare origin plus a developer clone used to push new commits into it."""

    bare: Path
    dev: Path

    @property
    def url(self) -> str:
        return f"file://{self.bare}"

    def commit(self, files: dict[str, str], message: str = "change", branch: str = "main") -> str:
        sh("checkout", "-q", "-B", branch, cwd=self.dev)
        for name, content in files.items():
            target = self.dev / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
        sh("add", "-A", cwd=self.dev)
        sh("commit", "-q", "-m", message, cwd=self.dev)
        sh("push", "-q", "origin", f"{branch}:{branch}", cwd=self.dev)
        return sh("rev-parse", "HEAD", cwd=self.dev).strip()

    def sha(self, ref: str) -> str:
        return sh("rev-parse", ref, cwd=self.bare).strip()


def make_origin(root: Path, files: dict[str, str] | None = None) -> Origin:
    bare = root / "origin.git"
    dev = root / "dev"
    sh("init", "-q", "--bare", str(bare))
    sh("init", "-q", str(dev))
    sh("remote", "add", "origin", str(bare), cwd=dev)
    origin = Origin(bare, dev)
    origin.commit(files or {"README.md": "hello\n", "src/app.py": "print('hi')\n"}, "initial")
    return origin


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[Origin]:
    yield make_origin(tmp_path / "remote")
