"""The filesystem and process policy of SPEC §9 and §16, spelled as a bwrap command line.

The sandbox starts from an empty root and sees only:

- the system, read-only: ``/usr`` and the ``/bin``, ``/sbin``, ``/lib*`` links or directories, and
  a short list of non-secret ``/etc`` files (loader cache, alternatives, TLS roots: never
  ``/etc/ssl/private``, ``/etc/shadow`` or the host's accounts); ``/etc/passwd`` and
  ``/etc/group`` are written for the sandbox (the agent, root and nobody);
- a fresh ``/proc`` whose kernel-facing parts (``/proc/sys``, ``/proc/sysrq-trigger``) are
  read-only, a minimal ``/dev``, and size-limited tmpfs
  ``/tmp`` and ``$HOME`` (``spec.tmp_mb``);
- the worktree, read-write (the current directory), ``spec.rw_binds`` read-write and
  ``spec.ro_binds`` read-only, at their host paths;
- ``spec.readonly_paths`` re-bound read-only over the writable worktree (git hooks and config).

``spec.hidden_paths`` stay invisible even when a parent is bound: a hidden directory is covered by
an empty read-only tmpfs, a hidden file by ``/dev/null``. A bind *inside* a hidden directory is an
explicit exception and is applied on top of the mask (e.g. ``~`` hidden, one interpreter
directory under it bound); the rest of the hidden directory stays invisible. Mounts are applied
shallowest first so a parent never covers a child.

Namespaces: all of them (user, ipc, pid, net, uts, cgroup), no further user namespaces, no network
unless ``spec.network``; ``--die-with-parent``, ``--new-session``, every capability dropped,
``no_new_privs`` (bwrap always sets it), and the seccomp filter of :mod:`sandbox.seccomp`.
The environment is exactly ``spec.env``. Which host user runs bwrap is the backend's business
(:mod:`sandbox.identity`); ``sources`` lets it substitute a staged path for a bind source.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from sandbox.base import SandboxError, SandboxSpec
from sandbox.bwrap_args import BwrapArgs

SYSTEM_PATHS: tuple[str, ...] = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_PATHS: tuple[str, ...] = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
)
# Parts of procfs that write to the kernel, read-only even for the sandbox's own root. The rest
# (irq, bus, kcore, timer_list...) belongs to host root, which nothing in the sandbox is; each
# extra bind costs start-up time, so only these two are covered: /proc/sys holds the sysctls of
# the sandbox's own network namespace, which its user namespace owns.
PROC_READONLY: tuple[str, ...] = ("sys", "sysrq-trigger")

_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

# Ranks order mounts on the same path: a bind, then a read-only re-bind, then a mask.
_BIND, _READONLY, _HIDE = 0, 1, 2


def validate_spec(spec: SandboxSpec) -> None:
    """Refuse a spec no backend can run, with a message naming the bad field."""
    if not _AGENT_ID.match(spec.agent_id):
        raise SandboxError(
            f"invalid agent id {spec.agent_id!r}: use 1-128 letters, digits, '.', '_' or '-'"
        )
    if not spec.argv or not all(isinstance(a, str) and a for a in spec.argv):
        raise SandboxError("argv must be a non-empty list of non-empty strings")
    if not spec.workdir.is_absolute() or not spec.workdir.is_dir():
        raise SandboxError(f"workdir {str(spec.workdir)!r} is not an existing absolute directory")
    if spec.memory_mb <= 0:
        raise SandboxError(f"memory_mb must be positive, got {spec.memory_mb}")
    if spec.pids_max <= 0:
        raise SandboxError(f"pids_max must be positive, got {spec.pids_max}")
    if spec.cpu_quota is not None and spec.cpu_quota <= 0:
        raise SandboxError(f"cpu_quota must be positive or None, got {spec.cpu_quota}")
    for what, paths in (("ro_binds", spec.ro_binds), ("rw_binds", spec.rw_binds)):
        for p in paths:
            if not p.is_absolute() or not os.path.exists(p):
                raise SandboxError(f"{what} entry {str(p)!r} is not an existing absolute path")
    for p in (*spec.readonly_paths, *spec.hidden_paths):
        if not p.is_absolute():
            raise SandboxError(f"path {str(p)!r} must be absolute")
    workdir = _norm(spec.workdir)
    for src, dest in spec.overlays:
        if not src.is_absolute() or not os.path.isfile(src) or os.path.islink(src):
            raise SandboxError(f"overlay source {str(src)!r} is not an existing regular file")
        if not dest.is_absolute() or not _under(_norm(dest), workdir) or _norm(dest) == workdir:
            raise SandboxError(f"overlay target {str(dest)!r} is not inside the worktree")


@dataclass(frozen=True)
class _Mount:
    dest: str
    rank: int
    src: str
    writable: bool = False

    @property
    def depth(self) -> int:
        return self.dest.rstrip("/").count("/")


def _norm(p: Path | str) -> str:
    return os.path.normpath(os.path.abspath(p))


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def bind_sources(spec: SandboxSpec) -> list[tuple[str, bool]]:
    """Every host path ``spec`` binds beyond the system, with whether it is writable."""
    out = [(_norm(p), False) for p in spec.ro_binds]
    out += [(_norm(p), True) for p in spec.rw_binds]
    out.append((_norm(spec.workdir), True))
    out += [(_norm(p), False) for p in spec.readonly_paths if os.path.lexists(p)]
    out += [(_norm(src), False) for src, _dest in spec.overlays]
    return out


def build_args(
    spec: SandboxSpec,
    *,
    bwrap: str = "bwrap",
    seccomp_fd: int | None = None,
    etc_data: dict[str, int] | None = None,
    sources: dict[str, str] | None = None,
    home: str | None = None,
    userns: tuple[int, int, int] | None = None,
    system_paths: tuple[str, ...] = SYSTEM_PATHS,
    etc_paths: tuple[str, ...] = ETC_PATHS,
) -> BwrapArgs:
    """The bwrap options that confine ``spec`` (call :func:`validate_spec` first).

    ``etc_data`` maps files under ``/etc`` to fds holding their content (passwd, group);
    ``sources`` maps a bind source to the path bwrap should bind instead (a staged copy of the
    same mount); ``home`` is a private tmpfs home directory to create; ``userns`` is
    ``(fd, uid, gid)`` of a user namespace to join as that user (a root bwrap), else bwrap makes
    one of its own for the user running it.
    """
    args = BwrapArgs(binary=bwrap)
    sources = sources or {}
    if userns is not None:
        args.unshare_all_but_user().userns(*userns)
    else:
        args.unshare_all().unshare_user().disable_userns()
    if spec.network:
        args.share_net()
    args.die_with_parent().new_session().cap_drop_all().hostname("mosaic-sandbox")

    mounts: list[_Mount] = []
    for sys_path in system_paths:
        if os.path.islink(sys_path):
            args.symlink(os.readlink(sys_path), sys_path)
        elif os.path.exists(sys_path):
            mounts.append(_Mount(sys_path, _BIND, sys_path))
    mounts += [_Mount(p, _BIND, p) for p in etc_paths if os.path.exists(p)]
    mounts += [_Mount(_norm(p), _BIND, _norm(p)) for p in spec.ro_binds]
    mounts += [_Mount(_norm(p), _BIND, _norm(p), writable=True) for p in spec.rw_binds]
    workdir = _norm(spec.workdir)
    mounts.append(_Mount(workdir, _BIND, workdir, writable=True))
    for p in spec.readonly_paths:
        if not os.path.lexists(p):
            continue
        if os.path.islink(p):  # planted by the agent: binding it would expose its target
            raise SandboxError(f"refusing to bind {str(p)!r}: it is a symbolic link")
        mounts.append(_Mount(_norm(p), _READONLY, _norm(p)))
    for overlay_src, overlay_dest in spec.overlays:
        target = _norm(overlay_dest)
        if os.path.islink(target):  # the agent replaced the file by a link: cover the link
            raise SandboxError(f"refusing to cover {target!r}: it is a symbolic link")
        mounts.append(_Mount(target, _READONLY, _norm(overlay_src)))
    bound = [m.dest for m in mounts]
    masked: list[str] = []
    for hidden in spec.hidden_paths:
        dest = _norm(hidden)
        if not os.path.lexists(dest):
            continue
        exposed = any(_under(dest, b) or _under(os.path.realpath(dest), b) for b in bound)
        if not exposed:
            continue  # nothing above it is bound: already invisible
        if dest in bound:
            raise SandboxError(f"path {dest!r} is both bound into the sandbox and hidden")
        mounts.append(_Mount(dest, _HIDE, dest))
        if os.path.isdir(dest) and not os.path.islink(dest):
            masked.append(dest)

    # Fresh kernel filesystems, ordered by depth like the binds so a parent never covers them.
    specials = [("/proc", "proc"), ("/dev", "dev"), ("/tmp", "tmpfs")]
    if home is not None:
        specials.append((_norm(home), "home"))
    ordered: list[tuple[int, int, int, str, str | _Mount]] = [
        (path.rstrip("/").count("/"), -1, i, path, kind) for i, (path, kind) in enumerate(specials)
    ]
    ordered += [(m.depth, m.rank, i, m.dest, m) for i, m in enumerate(mounts)]
    ordered.sort(key=lambda t: (t[0], t[1], t[2]))
    for _depth, _rank, _i, dest, item in ordered:
        if item == "proc":
            _proc(args, dest)
        elif item == "dev":
            args.dev(dest)
        elif item == "tmpfs":
            args.tmpfs(dest, perms=0o1777, size=spec.tmp_mb * 1024 * 1024)
        elif item == "home":
            args.tmpfs(dest, perms=0o700, size=spec.tmp_mb * 1024 * 1024)
        elif isinstance(item, _Mount):
            src = sources.get(item.src, item.src)
            if item.rank == _HIDE:
                if dest in masked:
                    args.tmpfs(dest, perms=0o000)
                else:
                    args.ro_bind("/dev/null", dest)
            elif item.writable:
                args.bind(src, dest)
            else:
                args.ro_bind(src, dest)
    for dest, fd in sorted((etc_data or {}).items()):
        args.ro_bind_data(fd, dest, perms=0o644)
    for dest in masked:
        args.remount_ro(dest)
    args.remount_ro("/")

    args.clearenv()
    for name, value in spec.env.items():
        args.setenv(name, value)
    if home is not None and "HOME" not in spec.env:
        args.setenv("HOME", _norm(home))
    args.chdir(workdir)
    if seccomp_fd is not None:
        args.seccomp(seccomp_fd)
    return args


def _proc(args: BwrapArgs, dest: str) -> None:
    """A fresh procfs whose kernel-facing parts are read-only."""
    args.proc(dest)
    for name in PROC_READONLY:
        if os.path.exists(f"/proc/{name}"):
            args.ro_bind(f"/proc/{name}", f"{dest}/{name}")
