"""HTTP/1.x message heads as a forward proxy sees them: parsed strictly, rewritten minimally.

The proxy handles one request per client connection: it forwards the request with
``Connection: close`` (origin-form target, ``Host`` set from the URI, proxy and hop-by-hop
headers dropped) and tells the client ``Connection: close`` in the response, so nothing a client
pipelines after its request ever reaches an upstream.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

MAX_HEAD = 64 * 1024
"""Largest request or response head (request line plus headers) accepted."""
MAX_HEADERS = 128

_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    }
)
REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    429: "Too Many Requests",
    502: "Bad Gateway",
    504: "Gateway Timeout",
}


class Malformed(Exception):
    """A message the proxy will not forward; the text is the one-line reason."""


@dataclass(frozen=True)
class Target:
    host: str
    """As written in the request (an IPv6 literal keeps its brackets)."""
    port: int
    path: str = ""
    """Origin-form target for a forwarded request (``/`` at least); empty for CONNECT."""

    @property
    def authority(self) -> str:
        return self.host if self.port == 80 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Head:
    """A request head (``start`` = method, target, version) or a response head."""

    start: tuple[str, str, str]
    headers: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name]


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """Bytes up to and including the blank line; None at a clean EOF before any byte.

    The reader's limit must be ``MAX_HEAD``: a longer head raises ``Malformed``.
    """
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise Malformed("the message head ended early") from None
    except asyncio.LimitOverrunError:
        raise Malformed(f"the message head is over {MAX_HEAD} bytes") from None


def parse_head(raw: bytes) -> Head:
    text = raw.decode("latin-1")
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) != 3 or not all(parts):
        raise Malformed("malformed start line")
    if len(lines) - 1 > MAX_HEADERS:
        raise Malformed(f"more than {MAX_HEADERS} header lines")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.match(name):
            raise Malformed("malformed header line")
        if any(c in value for c in "\r\n\0"):
            raise Malformed("control characters in a header value")
        headers.append((name, value.strip(" \t")))
    return Head((parts[0], parts[1], parts[2]), tuple(headers))


def parse_request(raw: bytes) -> tuple[Head, Target]:
    head = parse_head(raw)
    method, target, version = head.start
    if not _TOKEN.match(method) or version not in ("HTTP/1.1", "HTTP/1.0"):
        raise Malformed("not an HTTP/1.x request line")
    if any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in target):
        raise Malformed("invalid characters in the request target")
    if method == "CONNECT":
        host, port = _authority(target, default_port=None)
        return head, Target(host, port)
    scheme, sep, rest = target.partition("://")
    if not sep:
        raise Malformed("a proxy request needs an absolute URI (http://host/path)")
    if scheme.lower() != "http":
        raise Malformed(f"{scheme}:// is not proxied as a plain request (use CONNECT for https)")
    split = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:split], rest[split:]
    if "#" in path:
        raise Malformed("a fragment in the request target")
    if not path.startswith("/"):
        path = "/" + path
    host, port = _authority(authority, default_port=80)
    return head, Target(host, port, path)


def _authority(text: str, *, default_port: int | None) -> tuple[str, int]:
    if "@" in text:
        raise Malformed("user information in the request target is not accepted")
    if text.startswith("["):
        close = text.find("]")
        host, rest = text[: close + 1], text[close + 1 :]
        if close < 0 or (rest and not rest.startswith(":")):
            raise Malformed("malformed IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_ = text.partition(":")
        port_text = port_text_ if sep else None
    if not host:
        raise Malformed("no host in the request target")
    if port_text is None:
        if default_port is None:
            raise Malformed("CONNECT needs host:port")
        return host, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Malformed("malformed port in the request target")
    return host, int(port_text)


def body_framing(head: Head) -> int | None:
    """The request body's length; ``-1`` for chunked, None for no body. Refuses ambiguity."""
    encodings = head.values("transfer-encoding")
    lengths = head.values("content-length")
    if encodings and lengths:
        raise Malformed("both Transfer-Encoding and Content-Length")
    if encodings:
        codings = [c.strip().lower() for v in encodings for c in v.split(",")]
        if codings != ["chunked"]:
            raise Malformed("only Transfer-Encoding: chunked is accepted on requests")
        return -1
    if not lengths:
        return None
    values = {v.strip() for v in lengths}
    if len(values) != 1 or not (value := values.pop()).isdigit():
        raise Malformed("malformed Content-Length")
    return int(value)


def _kept(headers: tuple[tuple[str, str], ...]) -> list[tuple[str, str]]:
    named = {
        token.strip().lower()
        for k, v in headers
        if k.lower() in ("connection", "proxy-connection")
        for token in v.split(",")
    }
    return [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP and k.lower() not in named]


def forward_request(head: Head, target: Target) -> bytes:
    """The request head to send upstream: origin-form, ``Host`` from the URI, ``close``."""
    method, _, version = head.start
    lines = [f"{method} {target.path} {version}", f"Host: {target.authority}"]
    lines += [f"{k}: {v}" for k, v in _kept(head.headers) if k.lower() != "host"]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def forward_response(head: Head) -> bytes:
    """The response head to send the client: hop-by-hop headers dropped, ``close``."""
    version, status, reason = head.start
    lines = [f"{version} {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in _kept(head.headers)]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def response_status(head: Head) -> int:
    version, status, _ = head.start
    if not version.startswith("HTTP/1.") or not status.isdigit() or len(status) != 3:
        raise Malformed("the upstream did not answer with HTTP/1.x")
    return int(status)


def error_answer(status: int, reason: str, *, retry_after: int | None = None) -> bytes:
    """A complete ``Connection: close`` answer whose body is the one-line reason."""
    body = (reason.replace("\r", " ").replace("\n", " ") + "\n").encode()
    lines = [
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        "X-Mosaic-Egress: " + ("denied" if status in (403, 429) else "error"),
    ]
    if retry_after is not None:
        lines.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
