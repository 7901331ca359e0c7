"""The unprivileged host user that agents and gates run as (SPEC §16 "never host root").

When the orchestrator is root, every sandbox process runs as ``SANDBOX_UID``/``SANDBOX_GID``
(default 64000, a uid no account should own), in a user namespace that maps that uid only
(:mod:`sandbox.userns`), so nothing inside can ever be host uid 0. When the orchestrator is not
root it cannot switch users; its own uid is the sandbox user.

The sandbox user must own what the agent may write (its worktree, its private I/O directory):
:meth:`SandboxUser.grant` hands a tree over without following links. It must also be able to
*reach* every path bwrap binds, since bwrap resolves bind sources as that user:
:meth:`SandboxUser.can_reach` tells the backend which sources to stage (see ``sandbox.bwrap``).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sandbox.base import SandboxError

DEFAULT_SANDBOX_UID = 64000
SANDBOX_USER_NAME = "agent"
SANDBOX_HOME = "/home/agent"


@dataclass(frozen=True)
class SandboxUser:
    uid: int
    gid: int
    drop: bool
    """True when the orchestrator is root and must switch to ``uid`` before bwrap starts."""

    @classmethod
    def resolve(cls, uid: int | None = None, gid: int | None = None) -> SandboxUser:
        """The sandbox user for this process: ``uid``/``gid`` (or the default) when root."""
        if uid == 0 or gid == 0:
            raise SandboxError("SANDBOX_UID/SANDBOX_GID must not be 0: agents never run as root")
        if os.geteuid() == 0:
            chosen = DEFAULT_SANDBOX_UID if uid is None else uid
            return cls(uid=chosen, gid=chosen if gid is None else gid, drop=True)
        own_uid, own_gid = os.getuid(), os.getgid()
        if uid not in (None, own_uid) or gid not in (None, own_gid):
            raise SandboxError(
                f"SANDBOX_UID/SANDBOX_GID ({uid}/{gid}) need a root orchestrator; "
                f"unset them to run agents as this user ({own_uid}/{own_gid})"
            )
        return cls(uid=own_uid, gid=own_gid, drop=False)

    # -- the user's view inside -----------------------------------------------------------------
    def passwd(self) -> str:
        """``/etc/passwd`` inside the sandbox: the agent is an ordinary user with a HOME."""
        return (
            "root:x:0:0:root:/root:/usr/sbin/nologin\n"
            f"{SANDBOX_USER_NAME}:x:{self.uid}:{self.gid}:Mosaic agent:{SANDBOX_HOME}:/bin/sh\n"
            "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        )

    def group(self) -> str:
        return f"root:x:0:\n{SANDBOX_USER_NAME}:x:{self.gid}:\nnogroup:x:65534:\n"

    # -- what the user may do on the host -------------------------------------------------------
    def _allowed(self, st: os.stat_result, bits: int) -> bool:
        """``bits`` (an rwx triple, e.g. 0o5) granted to this user by ``st``'s mode."""
        if st.st_uid == self.uid:
            return (st.st_mode >> 6) & bits == bits
        if st.st_gid == self.gid:
            return (st.st_mode >> 3) & bits == bits
        return st.st_mode & bits == bits

    def can_reach(self, path: str | Path, *, write: bool = False, execute: bool = False) -> bool:
        """Whether this user can look ``path`` up and open it (read, read-write, or execute).

        Checks the search bit of every directory on the way, for the path as written and for its
        resolved form. Ignores ACLs (a false "no" only costs a staged bind).
        """
        if not self.drop:
            return True
        text = os.path.abspath(path)
        for candidate in {text, os.path.realpath(text)}:
            parts = Path(candidate).parts
            node = Path(parts[0])
            try:
                for part in parts[1:]:
                    if not self._allowed(os.stat(node), 0o1):
                        return False
                    node = node / part
                st = os.stat(node)
            except OSError:
                return False
            if execute:
                need = 0o1
            else:
                need = 0o4 | (0o2 if write else 0) | (0o1 if stat.S_ISDIR(st.st_mode) else 0)
            if not self._allowed(st, need):
                return False
        return True

    def grant(self, top: Path) -> None:
        """Make ``top`` and everything under it owned by this user, never following a link.

        Entries with several hard links are left alone unless they already belong to the user
        (a hard link planted to a host file must never make that file the agent's).
        """
        if not self.drop:
            return
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(st.st_mode):
            raise SandboxError(f"refusing to hand over {str(top)!r}: it is a symbolic link")
        self._own(str(top), st)
        if not stat.S_ISDIR(st.st_mode):
            return
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            for name in (*dirnames, *filenames):
                path = os.path.join(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    self._own(path, os.lstat(path))

    def _own(self, path: str, st: os.stat_result) -> None:
        if st.st_uid == self.uid and st.st_gid == self.gid:
            return
        if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            return
        try:
            os.lchown(path, self.uid, self.gid)
        except OSError as exc:
            raise SandboxError(f"cannot hand {path!r} to the sandbox user: {exc}") from exc
