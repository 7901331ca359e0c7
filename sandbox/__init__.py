"""Sandbox backends for agent processes: ``bwrap`` (default on Linux), ``docker``, ``none``."""

from sandbox.base import (
    Sandbox,
    SandboxError,
    SandboxHealth,
    SandboxProcess,
    SandboxSpec,
    SandboxStats,
)
from sandbox.factory import BACKENDS, create_sandbox
from sandbox.reaper import OrphanReaper, enable_subreaper
from sandbox.runtime_binds import python_binds

__all__ = [
    "BACKENDS",
    "OrphanReaper",
    "Sandbox",
    "SandboxError",
    "SandboxHealth",
    "SandboxProcess",
    "SandboxSpec",
    "SandboxStats",
    "create_sandbox",
    "enable_subreaper",
    "python_binds",
]
