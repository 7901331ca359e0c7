"""Egress for sandboxes: the allowlist and the filtering proxy (SPEC §16)."""

from core.net.allowlist import (
    DEFAULT_PORTS,
    Allowlist,
    Rule,
    Verdict,
    address_problem,
    allowlist_entries,
    ip_literal,
    parse_rule,
)
from core.net.errors import EgressError
from core.net.proxy import (
    SOCKET_NAME,
    EgressProxy,
    Emit,
    ProxyEndpoint,
    Resolver,
    proxy_env,
    system_resolver,
)

__all__ = [
    "DEFAULT_PORTS",
    "SOCKET_NAME",
    "Allowlist",
    "EgressError",
    "EgressProxy",
    "Emit",
    "ProxyEndpoint",
    "Resolver",
    "Rule",
    "Verdict",
    "address_problem",
    "allowlist_entries",
    "ip_literal",
    "parse_rule",
    "proxy_env",
    "system_resolver",
]
