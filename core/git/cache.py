"""The clone cache: one bare clone per repository, shared by all worktrees of that repository.

A clone is keyed by its repository's location *without credentials*: ``https://a:T1@host/r`` and
``https://b:T2@host/r`` name the same repository and share one clone (a rotated token reuses the
clone; no token, not even hashed, ends up in a directory name, which a sandbox sees in its
worktree's ``.git`` file). Sharing grants nothing: every :meth:`RepoCache.ensure` fetches with the
caller's own credentials and fails if origin refuses them. The clone's ``remote.origin.url`` never
holds credentials; they are handed to git per command (:mod:`core.git.credentials`).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import shutil
import uuid
import weakref
from pathlib import Path

from core.git.credentials import Credentials, split_credentials, split_repository
from core.git.errors import CloneFailed, FetchFailed
from core.git.locks import repo_lock
from core.git.runner import redact, run_git, tail

log = logging.getLogger(__name__)

ORIGIN_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"


def cache_name(normalised: str) -> str:
    """Directory name of a repository's clone: a readable slug plus a hash of the location.

    Credentials are left out of both (see the module's docstring).
    """
    location, _ = split_credentials(normalised)
    digest = hashlib.sha256(location.encode()).hexdigest()[:16]
    readable = redact(location).split("://", 1)[-1].replace("***@", "")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", readable).strip("._-")[-60:].strip("._-")
    return f"{slug or 'repo'}-{digest}.git"


async def fetch_origin(cache: Path, *refspecs: str, credentials: Credentials | None = None) -> None:
    """Fetch origin into ``refs/remotes/origin/*`` (caller holds the repository lock)."""
    args = ("fetch", "--prune", "--no-tags", "--quiet", "origin", *(refspecs or (ORIGIN_REFSPEC,)))
    result = await run_git(*args, git_dir=cache, credentials=credentials)
    if result.returncode != 0:
        raise FetchFailed(
            f"fetch from origin failed: {tail(result.stderr) or 'no output'}",
            command="git fetch",
            returncode=result.returncode,
            stderr=tail(result.stderr),
        )


class RepoCache:
    """Cached clones under ``root``; :meth:`ensure` clones once and fetches on every reuse.

    Safe under concurrent calls for the same repository: an asyncio lock per repository inside
    one process plus an ``fcntl`` file lock between processes.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._locks: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    def path_for(self, repository: str) -> Path:
        """Where the clone of ``repository`` lives (validates and normalises it)."""
        return self.root.resolve() / cache_name(split_repository(repository)[0])

    def _lock(self, name: str) -> asyncio.Lock:
        per_loop = self._locks.setdefault(asyncio.get_running_loop(), {})
        return per_loop.setdefault(name, asyncio.Lock())

    async def ensure(self, repository: str) -> Path:
        """Return the path of an up-to-date bare clone of ``repository``.

        Credentials in ``repository`` (``https://user:token@host/...``) are used for this clone
        or fetch only, never stored. Raises :class:`~core.git.errors.InvalidRepository` for a bad
        location, :class:`CloneFailed` (or its subclass :class:`FetchFailed`) when origin is
        unreachable or refuses the credentials.
        """
        location, credentials = split_repository(repository)
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        dest = self.root.resolve() / cache_name(location)
        async with self._lock(dest.name), repo_lock(dest):
            if (dest / "HEAD").is_file():
                log.debug("fetching cached clone", extra={"cache": str(dest)})
                await fetch_origin(dest, credentials=credentials)
            else:
                log.info("cloning repository", extra={"repository": redact(location)})
                await self._clone(location, dest, credentials)
        return dest

    async def _clone(self, location: str, dest: Path, credentials: Credentials | None) -> None:
        for stale in self.root.glob(f".{dest.name}.tmp-*"):
            await asyncio.to_thread(shutil.rmtree, stale, True)
        tmp = self.root / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            await _init_bare(tmp, location)
            try:
                await fetch_origin(tmp, credentials=credentials)
            except FetchFailed as exc:
                raise CloneFailed(
                    f"cannot clone {redact(location)}: {exc.stderr or exc.message}",
                    command="git fetch",
                    returncode=exc.returncode,
                    stderr=exc.stderr,
                ) from None
            await asyncio.to_thread(tmp.rename, dest)
        finally:
            if tmp.exists():
                await asyncio.to_thread(shutil.rmtree, tmp, True)


async def _init_bare(path: Path, url: str) -> None:
    if split_credentials(url)[1] is not None:  # a programming error: never store a token
        raise ValueError("refusing to store a repository URL that carries credentials")
    steps: tuple[tuple[str, ...], ...] = (
        ("init", "--quiet", "--bare", "--template=", str(path)),
        ("config", "remote.origin.url", url),
        ("config", "remote.origin.fetch", ORIGIN_REFSPEC),
        ("config", "core.logAllRefUpdates", "false"),
    )
    for i, step in enumerate(steps):
        result = await run_git(*step, git_dir=path if i else None)
        if result.returncode != 0:
            raise CloneFailed(
                f"cannot create the cached clone: {tail(result.stderr)}",
                command=f"git {step[0]}",
                returncode=result.returncode,
            )
