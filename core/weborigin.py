"""Origins and host names as the API compares them (SPEC §18): one normal form for both sides.

An origin is ``scheme://host[:port]`` (RFC 6454): lower case, the scheme's default port dropped, an
IPv6 address in brackets. A host name is a ``Host`` header's name without its port: lower case, an
IPv6 address without brackets. Anything else (``null``, a path, user info, odd characters) is
malformed and compares equal to nothing.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
LOOPBACK_NAMES = frozenset({"localhost"})
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::"})
_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$")


def host_name(value: str) -> str | None:
    """``Host`` header value -> its name (``[::1]:3001`` -> ``::1``), or None if malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1 :]
        if end < 0 or (rest and not _port(rest)):
            return None
        return _ip(value[1:end], version=6)
    name, sep, port = value.partition(":")
    if sep and not _port(":" + port):
        return None
    if _ip(name, version=4) is not None:
        return name
    return name if _NAME.match(name) and len(name) <= 253 else None


def origin_of(value: str) -> str | None:
    """An ``Origin`` header (or a configured origin) in normal form, or None if malformed."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or parts.username is not None or parts.password is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or not parts.hostname:
        return None
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    elif _ip(host, version=4) is None and not _NAME.match(host):
        return None
    shown_port = "" if port in (None, DEFAULT_PORTS[scheme]) else f":{port}"
    return f"{scheme}://{host}{shown_port}"


def is_loopback(name: str) -> bool:
    """A name that can only mean this machine: ``localhost`` or a loopback address."""
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _port(value: str) -> bool:
    return value.startswith(":") and value[1:].isdigit() and 0 < int(value[1:]) < 65536


def _ip(value: str, *, version: int) -> str | None:
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    return str(address) if address.version == version else None


def configured_host(value: str) -> str | None:
    """An ``ORCHESTRATOR_ALLOWED_HOSTS`` entry in normal form (``*`` stays), or None."""
    value = value.strip().lower()
    if value == "*":
        return value
    if is_ip(value.strip("[]")):
        return str(ipaddress.ip_address(value.strip("[]")))
    return host_name(value)
