"""Choose a sandbox backend by name: the one place configuration picks an implementation.

``cgroup_parent`` is the *scope* every sandbox of one orchestrator instance lives in (the engine
passes ``<SANDBOX_CGROUP_PARENT>/<instance slug>``, see ``core/instance.py``): the parent of the
agents' cgroups for ``bwrap``, the value of the ``mosaic.scope`` label of the containers for
``docker``. A backend's ``reap_orphans`` looks inside its scope only.
"""

from __future__ import annotations

import asyncio
import sys

from sandbox.base import Sandbox, SandboxError
from sandbox.identity import SandboxUser

BACKENDS = ("bwrap", "docker", "none")


def create_sandbox(
    backend: str,
    *,
    cgroup_parent: str = "mosaic",
    docker_socket: str | None = None,
    docker_image: str | None = None,
    uid: int | None = None,
    gid: int | None = None,
    allow_no_cgroups: bool = False,
    bwrap: str | None = None,
) -> Sandbox:
    """The backend named ``backend`` ("bwrap" | "docker" | "none"); SandboxError if unusable.

    ``uid``/``gid``: the unprivileged host user sandboxes run as (see ``sandbox.identity``).
    """
    name = backend.strip().lower() if isinstance(backend, str) else backend
    if name == "bwrap":
        if not sys.platform.startswith("linux"):
            raise SandboxError("the bwrap sandbox needs Linux; use 'docker' or 'none'")
        from sandbox.bwrap import BwrapSandbox

        return BwrapSandbox(
            cgroup_parent=cgroup_parent,
            bwrap=bwrap,
            user=SandboxUser.resolve(uid, gid),
            allow_no_cgroups=allow_no_cgroups,
        )
    if name == "docker":
        from sandbox.docker import DockerSandbox

        return DockerSandbox(
            socket=docker_socket,
            image=docker_image,
            scope=cgroup_parent,
            user=SandboxUser.resolve(uid, gid),
        )
    if name == "none":
        from sandbox.none import NoneSandbox

        return NoneSandbox()
    raise SandboxError(f"unknown sandbox backend {backend!r}: choose one of {', '.join(BACKENDS)}")


async def release_scope(backend: str, cgroup_parent: str) -> None:
    """At shutdown: remove the scope's cgroup directory if no agent cgroup is left in it.

    Never kills anything: what is still there is left for the next start's reconciliation.
    Only ``bwrap`` creates cgroups; the other backends have nothing to release.
    """
    if backend.strip().lower() != "bwrap" or not sys.platform.startswith("linux"):
        return
    from sandbox.cgroups import CgroupManager

    await asyncio.to_thread(CgroupManager(cgroup_parent).release)
