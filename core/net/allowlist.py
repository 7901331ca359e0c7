"""Which hosts a sandbox may reach (``SANDBOX_ALLOWED_HOSTS``, SPEC §16 "Egress allowlist").

An entry is a host name (``pypi.org``), a ``*.domain`` pattern (``*.github.com``: any name
*under* github.com, at any depth, not github.com itself), or an IP literal (``203.0.113.7``,
``[2001:db8::1]``), each optionally with ``:port``. An entry without a port opens ports 80 and
443; an entry with a port opens that port only (list both forms to have both).

Two checks guard an attempt, one before and one after name resolution:

- :meth:`Allowlist.check` (the name and port): the host must match an entry for that port; an
  IP literal in any spelling the resolver would accept (``127.1``, ``0x7f.0.0.1``,
  ``2130706433``, ``[::1]``) must itself be listed.
- :func:`address_problem` (every address the name resolved to): loopback, private, link-local,
  multicast, reserved, unspecified and other non-global addresses are refused (IPv4-mapped,
  6to4 and NAT64 IPv6 forms are judged by the IPv4 address they carry), unless the host is
  listed *explicitly* (by its exact name or literal, not through a ``*.`` pattern).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass

DEFAULT_PORTS = frozenset({80, 443})
MAX_NAME = 253
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Rule:
    """One allowlist entry. ``host`` is a lower-case name, the suffix of a ``*.`` pattern
    (``wildcard``) or a canonical IP literal (``literal``)."""

    host: str
    ports: frozenset[int]
    wildcard: bool = False
    literal: bool = False
    explicit_port: bool = False

    def __str__(self) -> str:
        name = f"*.{self.host}" if self.wildcard else self.host
        if ":" in name:
            name = f"[{name}]"
        return f"{name}:{next(iter(self.ports))}" if self.explicit_port else name

    def matches(self, host: str) -> bool:
        if self.wildcard:
            return host.endswith("." + self.host)
        return host == self.host


@dataclass(frozen=True)
class Verdict:
    """The outcome of :meth:`Allowlist.check`. ``explicit``: the exact name or literal is listed
    (so private addresses are accepted for it)."""

    allowed: bool
    reason: str
    literal: IPAddress | None = None
    explicit: bool = False


def ip_literal(host: str) -> IPAddress | None:
    """``host`` as an IP address when it is one in any spelling a resolver accepts, else None.

    IPv4 in the classic inet_aton forms (``127.1``, ``0x7f000001``, ``017700000001``...) counts,
    since ``getaddrinfo`` would turn such a "name" into that address.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if ":" in text or not text or not all(c in "0123456789abcdefx." for c in text.lower()):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def normalize_name(host: str) -> str | None:
    """A host name in lower case without its trailing dot, or None when it is not a valid name."""
    name = host.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > MAX_NAME or not name.isascii():
        return None
    if not all(_LABEL.match(label) for label in name.split(".")):
        return None
    return name


def _split_port(text: str) -> tuple[str, int | None]:
    """``host[:port]`` / ``[v6][:port]`` / bare ``v6`` -> (host, port)."""
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: unclosed '[' in an IPv6 literal")
        host, rest = text[1:close], text[close + 1 :]
        if not rest:
            return f"[{host}]", None
        if not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':port' after ']'")
        return f"[{host}]", _port(text, rest[1:])
    if text.count(":") > 1:
        return text, None  # a bare IPv6 literal
    host, sep, port = text.partition(":")
    return host, (_port(text, port) if sep else None)


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
    return int(text)


def parse_rule(entry: str) -> Rule:
    """One allowlist entry; ``ValueError`` with a message naming the entry and the problem."""
    text = entry.strip()
    if "://" in text or "/" in text:
        raise ValueError(f"{entry!r}: give a host name (e.g. pypi.org), not a URL or a network")
    if text in ("*", "*.*") or text.startswith("*:"):
        raise ValueError(f"{entry!r}: '*' would open all egress; list the names or *.domain")
    host, port = _split_port(text)
    ports = frozenset({port}) if port is not None else DEFAULT_PORTS
    explicit_port = port is not None
    literal = ip_literal(host)
    if literal is not None:
        if isinstance(literal, ipaddress.IPv6Address) and literal.scope_id:
            raise ValueError(f"{entry!r}: IPv6 zone ids are not supported")
        return Rule(str(literal), ports, literal=True, explicit_port=explicit_port)
    if host.startswith("[") or ":" in host:
        raise ValueError(f"{entry!r}: not a valid IP literal")
    wildcard = host.startswith("*.")
    name = normalize_name(host[2:] if wildcard else host)
    if name is None or "*" in host[2 if wildcard else 0 :]:
        raise ValueError(
            f"{entry!r}: not a host name or *.domain pattern (letters, digits, '-', '_' and "
            "dots; '*' only as a whole first label)"
        )
    return Rule(name, ports, wildcard=wildcard, explicit_port=explicit_port)


def allowlist_entries(value: object) -> tuple[str, ...]:
    """Settings form: a comma-separated string (or a list) -> canonical entries (validated)."""
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, Iterable):
        items = [str(v) for v in value]
    else:
        raise ValueError("must be a comma-separated list of host names")
    return tuple(str(parse_rule(item)) for item in items if item.strip())


class Allowlist:
    """The parsed ``SANDBOX_ALLOWED_HOSTS``; empty means no egress at all."""

    def __init__(self, rules: Iterable[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> Allowlist:
        items = entries.split(",") if isinstance(entries, str) else list(entries)
        return cls(parse_rule(item) for item in items if item.strip())

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __repr__(self) -> str:
        return f"Allowlist({', '.join(map(str, self.rules))})"

    def check(self, host: str, port: int) -> Verdict:
        """May a sandbox ask for ``host:port``? (The addresses are checked after resolution.)"""
        if not self.rules:
            return Verdict(False, "no egress is allowed (SANDBOX_ALLOWED_HOSTS is empty)")
        literal = ip_literal(host)
        if literal is not None:
            for rule in self.rules:
                if rule.literal and rule.host == str(literal) and port in rule.ports:
                    return Verdict(True, f"listed: {rule}", literal=literal, explicit=True)
            return Verdict(
                False, f"IP literal {literal} is not in SANDBOX_ALLOWED_HOSTS", literal=literal
            )
        name = normalize_name(host)
        if name is None:
            return Verdict(False, f"{host!r} is not a valid host name")
        matched = [r for r in self.rules if not r.literal and r.matches(name)]
        if not matched:
            return Verdict(False, f"{name} is not in SANDBOX_ALLOWED_HOSTS")
        for rule in sorted(matched, key=lambda r: r.wildcard):
            if port in rule.ports:
                explicit = any(not r.wildcard for r in matched)
                return Verdict(True, f"listed: {rule}", explicit=explicit)
        return Verdict(False, f"port {port} is not allowed for {name}")


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_problem(address: IPAddress) -> str | None:
    """Why a sandbox must not reach ``address`` (unless explicitly listed), or None."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            problem = address_problem(embedded)
            return f"{problem} (embedded in {address})" if problem else None
        if address.teredo is not None:
            return "a Teredo tunnel address"
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address.is_reserved, "a reserved address"),
        (address.is_private, "a private address"),
        (not address.is_global, "not a globally routable address"),
    )
    for failed, what in checks:
        if failed:
            return what
    return None
