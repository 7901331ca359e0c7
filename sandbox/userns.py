"""The user namespace a root orchestrator's sandboxes run in: it maps the sandbox user only.

Made once per backend: a short-lived helper process unshares a user namespace, the orchestrator
(root in the parent namespace) writes its maps -- ``SANDBOX_UID`` to itself, nothing else, so no
uid inside is host uid 0 -- and keeps an fd on it. bwrap, started as root, joins it with
``--userns FD`` and switches to the sandbox user before it sets anything up: bind sources are
then resolved as that user (what it cannot reach is staged, see ``sandbox.bwrap``), and no setuid
helper or per-start namespace is needed. Each sandbox still gets its own mount, pid, net, ipc, uts
and cgroup namespaces; its processes have no capability in the shared one, and the seccomp
filter refuses new user namespaces inside (bwrap's ``--disable-userns`` needs a namespace of
bwrap's own).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time

from sandbox.base import SandboxError
from sandbox.identity import SandboxUser

_HOLD = "read _"  # the helper only has to exist while we open its namespace


class SandboxUserNamespace:
    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def create(cls, user: SandboxUser) -> SandboxUserNamespace:
        """A new user namespace mapping ``user`` to itself (root only)."""
        try:
            helper = subprocess.Popen(
                ["unshare", "--user", "--", "/bin/sh", "-c", _HOLD],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
        except OSError as exc:
            raise SandboxError(f"cannot create the sandbox user namespace: {exc}") from exc
        try:
            own = os.readlink("/proc/self/ns/user")
            ns = f"/proc/{helper.pid}/ns/user"
            for _ in range(500):  # the helper has unshared once its namespace differs from ours
                if helper.poll() is not None:
                    err = helper.stderr.read().decode(errors="replace") if helper.stderr else ""
                    raise SandboxError(f"cannot create the sandbox user namespace: {err.strip()}")
                with contextlib.suppress(OSError):
                    if os.readlink(ns) != own:
                        break
                time.sleep(0.002)
            else:
                raise SandboxError("cannot create the sandbox user namespace: no unshare")
            with open(f"/proc/{helper.pid}/uid_map", "w") as f:
                f.write(f"{user.uid} {user.uid} 1\n")
            with open(f"/proc/{helper.pid}/setgroups", "w") as f:
                f.write("deny")
            with open(f"/proc/{helper.pid}/gid_map", "w") as f:
                f.write(f"{user.gid} {user.gid} 1\n")
            fd = os.open(ns, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SandboxError(f"cannot create the sandbox user namespace: {exc}") from exc
        finally:
            if helper.stdin is not None:
                helper.stdin.close()
            try:
                helper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                helper.kill()
                helper.wait()
        return cls(fd)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
