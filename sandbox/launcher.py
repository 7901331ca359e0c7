"""How a sandboxed process is launched: enter the cgroup, or apply rlimits, then exec.

The launcher is a tiny ``/bin/sh`` step that writes itself into every cgroup entry file (its pid
``$$`` into a ``cgroup.procs`` file, ``0`` -- the calling thread -- into a v1 ``tasks`` file) and
then ``exec``s the sandbox command, so the command (bwrap, and through it
the agent) starts inside its cgroup: nothing runs before the limits apply, no ``preexec_fn`` is
needed (which is unsafe in a threaded program) and the spawn can still use ``vfork``. If a write
fails the launcher exits 125 before the payload ever runs (fail closed).

Without a writable cgroup the command is started through ``prlimit`` (address space and process
count limits) instead: the degraded mode reported by ``health()``.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ENTER_EXIT_CODE = 125

_ENTER_SCRIPT = (
    'for f do case "$f" in --) shift; break;; */tasks) v=0;; *) v=$$;; esac; '
    'echo $v > "$f" || exit 125; shift; done; exec "$@"'
)


def enter_cgroup_argv(entry_files: list[Path], command: list[str]) -> list[str]:
    """``command`` preceded by the step that moves the process into ``entry_files``' cgroups."""
    return ["/bin/sh", "-c", _ENTER_SCRIPT, "mosaic-cgexec", *map(str, entry_files), "--", *command]


def rlimit_argv(memory_mb: int, pids_max: int, command: list[str], prlimit: str) -> list[str]:
    """``command`` under RLIMIT_AS (``memory_mb``) and RLIMIT_NPROC (``pids_max``)."""
    mem = memory_mb * 1024 * 1024
    return [prlimit, f"--as={mem}", f"--nproc={pids_max}", "--", *command]
