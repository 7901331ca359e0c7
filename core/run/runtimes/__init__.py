"""The runtimes an agent's session can run under (SPEC §15), behind one seam."""

from core.run.runtimes.base import Runtime, Runtimes
from core.run.runtimes.builtin import BuiltinLaunch, BuiltinRuntime
from core.run.runtimes.command import CommandRuntime

__all__ = ["BuiltinLaunch", "BuiltinRuntime", "CommandRuntime", "Runtime", "Runtimes"]
