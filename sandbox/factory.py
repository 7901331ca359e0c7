"""Choose a sandbox backend by name: the one place configuration picks an implementation."""

from __future__ import annotations

import sys

from sandbox.base import Sandbox, SandboxError

BACKENDS = ("bwrap", "docker", "none")


def create_sandbox(
    backend: str,
    *,
    cgroup_parent: str = "mosaic",
    docker_socket: str | None = None,
    docker_image: str | None = None,
) -> Sandbox:
    """The backend named ``backend`` ("bwrap" | "docker" | "none"); SandboxError if unusable."""
    name = backend.strip().lower() if isinstance(backend, str) else backend
    if name == "bwrap":
        if not sys.platform.startswith("linux"):
            raise SandboxError("the bwrap sandbox needs Linux; use 'docker' or 'none'")
        from sandbox.bwrap import BwrapSandbox

        return BwrapSandbox(cgroup_parent=cgroup_parent)
    if name == "docker":
        from sandbox.docker import DockerSandbox

        return DockerSandbox(socket=docker_socket, image=docker_image)
    if name == "none":
        from sandbox.none import NoneSandbox

        return NoneSandbox()
    raise SandboxError(f"unknown sandbox backend {backend!r}: choose one of {', '.join(BACKENDS)}")
