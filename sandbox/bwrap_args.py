"""A small typed builder for the ``bwrap`` (bubblewrap) command line.

There is no maintained Python binding for bubblewrap; this module is the project's own. It knows
bwrap's options, validates their arguments (absolute paths, environment names, no NUL bytes) and
keeps mount operations in the order they were added, because bwrap applies them in argv order
(a later mount over a path hides an earlier one).

    args = BwrapArgs().unshare_all().die_with_parent().new_session().cap_drop_all()
    args.ro_bind("/usr").proc("/proc").dev("/dev").tmpfs("/tmp").bind(worktree).chdir(worktree)
    args.clearenv().setenv("PATH", "/usr/bin:/bin")
    argv = args.argv(["python", "agent.py"])

The policy (which paths to bind) lives in :mod:`sandbox.policy`; this module only spells argv.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from sandbox.base import SandboxError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

PathLike = str | Path


def _clean(value: str, what: str) -> str:
    if "\0" in value:
        raise SandboxError(f"{what} contains a NUL byte: {value!r}")
    return value


def _abs(path: PathLike, what: str = "path") -> str:
    text = _clean(str(path), what)
    if not text.startswith("/"):
        raise SandboxError(f"{what} must be absolute, got {text!r}")
    return text


@dataclass
class BwrapArgs:
    """An ordered list of bwrap options plus the file descriptors they refer to.

    Every method returns ``self`` so calls chain. ``pass_fds`` lists the descriptors the caller
    must keep open and hand to the child (``subprocess`` ``pass_fds``).
    """

    binary: str = "bwrap"
    _opts: list[str] = field(default_factory=list)
    pass_fds: list[int] = field(default_factory=list)
    _has_seccomp: bool = False

    # --- namespaces and process ----------------------------------------------------------------
    def unshare_all(self) -> BwrapArgs:
        """Every namespace bwrap supports: user (if possible), ipc, pid, net, uts, cgroup."""
        self._opts.append("--unshare-all")
        return self

    def unshare_user(self) -> BwrapArgs:
        self._opts.append("--unshare-user")
        return self

    def disable_userns(self) -> BwrapArgs:
        """Forbid creating further user namespaces inside (needs ``unshare_user``)."""
        self._opts.append("--disable-userns")
        return self

    def unshare_all_but_user(self) -> BwrapArgs:
        """ipc, pid, net, uts and cgroup: for a sandbox joining a user namespace (``userns``)."""
        self._opts += [
            "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
            "--unshare-cgroup-try",
        ]  # fmt: skip
        return self

    def userns(self, fd: int, uid: int, gid: int) -> BwrapArgs:
        """Join the user namespace ``fd`` (passed to the child) and run as ``uid``/``gid``."""
        if fd < 0:
            raise SandboxError(f"invalid user namespace fd {fd}")
        self._opts += ["--userns", str(fd)]
        self.pass_fds.append(fd)
        return self.uid(uid, gid)

    def share_net(self) -> BwrapArgs:
        """Keep the host network (only meaningful after ``unshare_all``)."""
        self._opts.append("--share-net")
        return self

    def die_with_parent(self) -> BwrapArgs:
        self._opts.append("--die-with-parent")
        return self

    def new_session(self) -> BwrapArgs:
        """``setsid()`` before exec: no controlling terminal, so no TIOCSTI injection."""
        self._opts.append("--new-session")
        return self

    def cap_drop_all(self) -> BwrapArgs:
        self._opts += ["--cap-drop", "ALL"]
        return self

    def hostname(self, name: str) -> BwrapArgs:
        self._opts += ["--hostname", _clean(name, "hostname")]
        return self

    def uid(self, uid: int, gid: int | None = None) -> BwrapArgs:
        if uid < 0 or (gid is not None and gid < 0):
            raise SandboxError(f"uid/gid must be >= 0, got {uid}/{gid}")
        self._opts += ["--uid", str(uid)]
        if gid is not None:
            self._opts += ["--gid", str(gid)]
        return self

    def chdir(self, path: PathLike) -> BwrapArgs:
        self._opts += ["--chdir", _abs(path, "chdir")]
        return self

    def seccomp(self, fd: int) -> BwrapArgs:
        """Load a compiled classic-BPF seccomp program from ``fd`` (see :mod:`sandbox.seccomp`)."""
        if self._has_seccomp:
            raise SandboxError("bwrap accepts one --seccomp program")
        if fd < 0:
            raise SandboxError(f"invalid seccomp fd {fd}")
        self._has_seccomp = True
        self._opts += ["--seccomp", str(fd)]
        self.pass_fds.append(fd)
        return self

    # --- environment ---------------------------------------------------------------------------
    def clearenv(self) -> BwrapArgs:
        self._opts.append("--clearenv")
        return self

    def setenv(self, name: str, value: str) -> BwrapArgs:
        if not _ENV_NAME.match(name):
            raise SandboxError(f"invalid environment variable name {name!r}")
        self._opts += ["--setenv", name, _clean(value, f"value of {name}")]
        return self

    def unsetenv(self, name: str) -> BwrapArgs:
        if not _ENV_NAME.match(name):
            raise SandboxError(f"invalid environment variable name {name!r}")
        self._opts += ["--unsetenv", name]
        return self

    # --- filesystem ----------------------------------------------------------------------------
    def _bind(self, opt: str, src: PathLike, dest: PathLike | None, try_: bool) -> BwrapArgs:
        source = _abs(src, "bind source")
        target = _abs(dest if dest is not None else src, "bind destination")
        self._opts += [f"{opt}-try" if try_ else opt, source, target]
        return self

    def bind(self, src: PathLike, dest: PathLike | None = None, *, try_: bool = False) -> BwrapArgs:
        """Read-write bind of host ``src`` at ``dest`` (default: the same path)."""
        return self._bind("--bind", src, dest, try_)

    def ro_bind(
        self, src: PathLike, dest: PathLike | None = None, *, try_: bool = False
    ) -> BwrapArgs:
        return self._bind("--ro-bind", src, dest, try_)

    def dev_bind(
        self, src: PathLike, dest: PathLike | None = None, *, try_: bool = False
    ) -> BwrapArgs:
        return self._bind("--dev-bind", src, dest, try_)

    def ro_bind_data(self, fd: int, dest: PathLike, *, perms: int | None = None) -> BwrapArgs:
        """A read-only file at ``dest`` holding what bwrap reads from ``fd`` (a passed fd)."""
        if fd < 0:
            raise SandboxError(f"invalid data fd {fd}")
        if perms is not None:
            self._perms(perms)
        self._opts += ["--ro-bind-data", str(fd), _abs(dest)]
        self.pass_fds.append(fd)
        return self

    def remount_ro(self, path: PathLike) -> BwrapArgs:
        self._opts += ["--remount-ro", _abs(path)]
        return self

    def tmpfs(
        self, path: PathLike, *, perms: int | None = None, size: int | None = None
    ) -> BwrapArgs:
        if perms is not None:
            self._perms(perms)
        if size is not None:
            if size <= 0:
                raise SandboxError(f"tmpfs size must be positive, got {size}")
            self._opts += ["--size", str(size)]
        self._opts += ["--tmpfs", _abs(path)]
        return self

    def dir(self, path: PathLike, *, perms: int | None = None) -> BwrapArgs:
        if perms is not None:
            self._perms(perms)
        self._opts += ["--dir", _abs(path)]
        return self

    def symlink(self, target: str, path: PathLike) -> BwrapArgs:
        """Create a symlink at ``path`` pointing to ``target`` (which may be relative)."""
        self._opts += ["--symlink", _clean(target, "symlink target"), _abs(path)]
        return self

    def proc(self, path: PathLike = "/proc") -> BwrapArgs:
        self._opts += ["--proc", _abs(path)]
        return self

    def dev(self, path: PathLike = "/dev") -> BwrapArgs:
        """A minimal /dev: null, zero, full, random, urandom, tty, pts, shm."""
        self._opts += ["--dev", _abs(path)]
        return self

    def _perms(self, perms: int) -> None:
        if not 0 <= perms <= 0o7777:
            raise SandboxError(f"invalid permissions {perms:o}")
        self._opts += ["--perms", f"{perms:04o}"]

    # --- output --------------------------------------------------------------------------------
    @property
    def options(self) -> list[str]:
        return list(self._opts)

    def argv(self, command: list[str]) -> list[str]:
        """The complete argv: ``bwrap <options> -- <command...>``."""
        if not command:
            raise SandboxError("empty command")
        for part in command:
            _clean(part, "command argument")
        return [self.binary, *self._opts, "--", *command]
