"""An attempt's way out: the egress proxy reached from inside its sandbox (SPEC §16).

With ``SANDBOX_ALLOWED_HOSTS`` set, every sandbox of the attempt (the agent's and its gates') sees
the orchestrator's filtering proxy (``core/net``) as ``HTTP_PROXY``/``HTTPS_PROXY`` on a loopback
port of its own network namespace, forwarded by ``sandbox/forwarder.py`` to the agent's proxy
socket. Without it there is no network at all, and nothing here is set up.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from core.models import AgentState
from core.net import EgressProxy, ProxyEndpoint, proxy_env
from core.run.iodir import attempt_name, fresh_io_dir
from sandbox import SandboxSpec
from sandbox.forwarder import forwarder_argv, forwarder_path
from sandbox.runtime_binds import python_binds

PROXY_PORT = 41128
"""The proxy's loopback port inside every sandbox (each has its own network namespace)."""


@dataclass(frozen=True)
class Egress:
    endpoint: ProxyEndpoint
    net_dir: Path

    def wrap(self, argv: list[str]) -> list[str]:
        """``argv`` started behind the forwarder of the proxy's port."""
        sockets = {PROXY_PORT: self.endpoint.socket_path}
        return forwarder_argv(sys.executable, forwarder_path(), sockets, argv)

    def apply(self, spec: SandboxSpec) -> SandboxSpec:
        """``spec`` (argv included) with the proxy reachable."""
        return replace(self.policy(spec), argv=self.wrap(spec.argv))

    def policy(self, spec: SandboxSpec) -> SandboxSpec:
        """``spec``'s binds and environment with the proxy's (its argv left as it is)."""
        ro = (*python_binds(sys.executable), forwarder_path())
        return replace(
            spec,
            env={**spec.env, **proxy_env(PROXY_PORT)},
            ro_binds=tuple(dict.fromkeys((*spec.ro_binds, *ro))),
            rw_binds=tuple(dict.fromkeys((*spec.rw_binds, self.net_dir))),
        )


async def open_egress(
    proxy: EgressProxy | None, agent: AgentState, stack: contextlib.AsyncExitStack
) -> Egress | None:
    """The attempt's egress, served until ``stack`` closes; None when egress is off."""
    if proxy is None or not proxy.enabled:
        return None
    net_dir = await fresh_io_dir(attempt_name(agent, "net"), stack)
    endpoint = await stack.enter_async_context(proxy.serve_agent(agent.agent_id, net_dir))
    return Egress(endpoint, net_dir)
