"""Sandbox backends for agent processes."""

from sandbox.base import (
    Sandbox,
    SandboxError,
    SandboxHealth,
    SandboxProcess,
    SandboxSpec,
    SandboxStats,
)

__all__ = [
    "Sandbox",
    "SandboxError",
    "SandboxHealth",
    "SandboxProcess",
    "SandboxSpec",
    "SandboxStats",
]
