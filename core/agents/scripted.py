"""The scripted model: a Messages-API server on loopback that replays tool-use sessions.

The only stand-in for the model in tests and the demo: the real ``anthropic`` SDK talks to it over
HTTP, non-streaming (JSON) or streaming (SSE with ``event:`` lines, in the event sequence of
the Messages API). The script is chosen per conversation: a ``[script:NAME]`` marker in the first
user message (the spawn request's ``instructions`` end up there) picks it, else ``default``.
See ``core/agents/scripts.py`` for the script format. A script's ``{{cwd}}`` is filled with the
working directory the request states (``request_cwd``): Claude Code sends it in a
``role: "system"`` message of ``messages`` (or, with the older layout, in ``system``) as
`` - Primary working directory: /abs/path``.

    python -m core.agents.scripted --port 8765 [--host 127.0.0.1] [--scripts DIR] [--default NAME]
        [--rate-limit SECONDS [--rate-limit-status 429|529] [--rate-limit-after N]]

``server.rate_limit(seconds, status)`` makes it answer every request 429 (``rate_limit_error``) or
529 (``overloaded_error``) with a ``retry-after`` for a while, as the API does when a limit is hit;
the refusals are recorded in ``server.limited``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import re
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp.web_request import BaseRequest
from aiohttp.web_response import Response, StreamResponse

from core.agents.errors import ScriptError
from core.agents.httpserve import RunningServer, error_response, serve_tcp
from core.agents.scripts import Script, load_scripts

log = logging.getLogger(__name__)
MARKER = re.compile(r"\[script:([A-Za-z0-9][A-Za-z0-9_.-]{0,63})\]")
JSON_CHUNK = 24  # input_json_delta pieces, so clients really reassemble partial JSON
CWD_LINE = re.compile(
    r"^\s*-?\s*Primary working directory:\s*(/[^\n]*?)(?:\s+\(was /[^\n]*\))?\s*$", re.M
)
"""Claude Code's environment block; a resumed session's says ``/new (was /old)``."""


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    """``time.monotonic()`` when it arrived."""


@dataclass
class LimitedAnswer:
    """A request the server refused with 429/529 during a rate-limit window."""

    path: str
    status: int
    retry_after: int | None
    at: float
    """``time.monotonic()`` when it was refused."""


@dataclass
class _Window:
    seconds: float
    status: int
    retry_after: bool
    after: int
    """Begins once this many Messages requests have been answered (0: at once)."""
    until: float | None = None


LIMIT_KINDS = {429: "rate_limit_error", 529: "overloaded_error"}


def _estimate_tokens(data: Any) -> int:
    return max(1, len(json.dumps(data, ensure_ascii=False)) // 4)


def _truncate(blocks: list[dict[str, Any]], max_tokens: int) -> list[dict[str, Any]]:
    """What fits in ``max_tokens``: whole blocks, then the start of a text block."""
    kept: list[dict[str, Any]] = []
    left = max_tokens * 4
    for block in blocks:
        size = len(json.dumps(block, ensure_ascii=False))
        if size <= left:
            kept.append(block)
            left -= size
            continue
        if block["type"] == "text" and left > 0:
            kept.append({**block, "text": block["text"][:left]})
        break
    return kept


def _first_user_text(messages: list[Any]) -> str:
    for message in messages:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return "\n".join(
                    str(b.get("text", ""))
                    for b in content
                    if isinstance(b, dict) and b.get("type") == "text"
                )
            return ""
    return ""


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        ]
    return []


def request_cwd(body: dict[str, Any]) -> str | None:
    """The agent's working directory as a Claude Code request states it, or None.

    Looked for in the ``system`` prompt and in the ``system``/``user`` messages (Claude Code
    2.1 puts its environment block in a ``role: "system"`` message after the first user one);
    the last one wins: a resumed session gets a new block for the directory it resumed in.
    """
    texts = _texts(body.get("system"))
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("system", "user"):
            texts += _texts(message.get("content"))
    found = None
    for text in texts:
        for match in CWD_LINE.finditer(text):
            found = match.group(1)
    return found


class ScriptedModelServer:
    """``async with ScriptedModelServer() as server:`` then point a client at ``server.url``."""

    def __init__(
        self,
        scripts: dict[str, Script] | None = None,
        default: str = "worker-hello",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        honour_max_tokens: bool = False,
    ) -> None:
        self.scripts = scripts if scripts is not None else load_scripts()
        if default not in self.scripts:
            raise ScriptError(f"default script {default!r} is not among the loaded scripts")
        self.default = default
        self.host = host
        self.port = port
        self.honour_max_tokens = honour_max_tokens
        """Stop an answer at the request's ``max_tokens`` as the API does (``stop_reason``
        ``max_tokens``); off by default, so that scripts play whole whatever the client asks."""
        self.requests: list[RecordedRequest] = []
        self.limited: list[LimitedAnswer] = []
        self.answered = 0
        """Messages requests answered by a script (not refused, not ``count_tokens``)."""
        self._windows: list[_Window] = []
        self._running: RunningServer | None = None

    @property
    def url(self) -> str:
        if self._running is None:
            raise RuntimeError("the scripted model server is not running")
        return f"http://{self.host}:{self._running.port}"

    async def start(self) -> None:
        self._running = await serve_tcp(self._handle, self.host, self.port)

    async def close(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            await running.close()

    async def __aenter__(self) -> ScriptedModelServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def rate_limit(
        self, seconds: float, status: int = 429, *, retry_after: bool = True, after: int = 0
    ) -> None:
        """Refuse every request with ``status`` (429 or 529) for ``seconds``, from now or from when
        ``after`` more Messages requests have been answered; ``retry_after``: say when to retry
        (whole seconds, as the API does) or give no hint."""
        if status not in LIMIT_KINDS:
            raise ValueError(f"a rate limit answers 429 or 529, not {status}")
        if not 0 < seconds <= 3600 or after < 0:
            raise ValueError("a rate limit lasts 0 < seconds <= 3600, after >= 0 answers")
        self._windows.append(_Window(seconds, status, retry_after, self.answered + after))

    def _refusal(self, path: str) -> Response | None:
        """The 429/529 answer while a rate-limit window is open, else None."""
        now = time.monotonic()
        for window in self._windows:
            if window.until is None and self.answered >= window.after:
                window.until = now + window.seconds
        self._windows = [w for w in self._windows if w.until is None or w.until > now]
        open_ = [w for w in self._windows if w.until is not None]
        if not open_:
            return None
        window = max(open_, key=lambda w: w.until or 0.0)
        left = math.ceil((window.until or now) - now) if window.retry_after else None
        self.limited.append(LimitedAnswer(path, window.status, left, now))
        message = "rate limited (scripted)" if window.status == 429 else "overloaded (scripted)"
        response = error_response(window.status, LIMIT_KINDS[window.status], message, retry=True)
        if left is not None:
            response.headers["retry-after"] = str(max(1, left))
        return response

    def choose(self, messages: list[Any]) -> Script:
        match = MARKER.search(_first_user_text(messages))
        name = match.group(1) if match else self.default
        script = self.scripts.get(name)
        if script is None:
            raise ScriptError(f"unknown script {name!r}; known: {', '.join(sorted(self.scripts))}")
        return script

    async def _handle(self, request: BaseRequest) -> StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(
            RecordedRequest(request.method, request.path, dict(request.headers), body)
        )
        if (refusal := self._refusal(request.path)) is not None:
            return refusal
        if request.method != "POST":
            return error_response(
                405, "invalid_request_error", f"method {request.method} not allowed"
            )
        if request.path not in ("/v1/messages", "/v1/messages/count_tokens"):
            return error_response(404, "not_found_error", f"no route {request.path}")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return error_response(
                400, "invalid_request_error", "body must be JSON with a messages list"
            )
        input_tokens = _estimate_tokens([body.get("system"), body["messages"], body.get("tools")])
        if request.path.endswith("count_tokens"):
            return Response(
                text=json.dumps({"input_tokens": input_tokens}), content_type="application/json"
            )
        try:
            script = self.choose(body["messages"])
        except ScriptError as exc:
            return error_response(400, "invalid_request_error", exc.message)
        self.answered += 1
        turn = sum(
            1 for m in body["messages"] if isinstance(m, dict) and m.get("role") == "assistant"
        )
        blocks = [dict(b) for b in script.turn(turn, cwd=request_cwd(body))]
        for block in blocks:
            if block["type"] == "tool_use":
                block["id"] = f"toolu_{uuid.uuid4().hex[:24]}"
        stop_reason = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        output_tokens = _estimate_tokens(blocks)
        limit = body.get("max_tokens")
        if self.honour_max_tokens and isinstance(limit, int) and 0 < limit < output_tokens:
            blocks = _truncate(blocks, limit)
            stop_reason, output_tokens = "max_tokens", limit
        message = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": str(body.get("model", "scripted")),
            "content": blocks,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        }
        if body.get("stream"):
            return await self._stream(request, message)
        return Response(text=json.dumps(message), content_type="application/json")

    async def _stream(self, request: BaseRequest, message: dict[str, Any]) -> StreamResponse:
        response = StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)

        async def send(event: str, data: dict[str, Any]) -> None:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())

        start = {**message, "content": [], "stop_reason": None}
        start["usage"] = {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}
        await send("message_start", {"type": "message_start", "message": start})
        await send("ping", {"type": "ping"})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                opening: dict[str, Any] = {"type": "text", "text": ""}
                text = block["text"]
                deltas = [
                    {"type": "text_delta", "text": text[i : i + 40]}
                    for i in range(0, len(text), 40)
                ]
            else:
                opening = {
                    "type": "tool_use",
                    "id": block["id"],
                    "name": block["name"],
                    "input": {},
                }
                raw = json.dumps(block["input"])
                deltas = [
                    {"type": "input_json_delta", "partial_json": raw[i : i + JSON_CHUNK]}
                    for i in range(0, len(raw), JSON_CHUNK)
                ]
            await send(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
            for delta in deltas:
                await send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            await send("content_block_stop", {"type": "content_block_stop", "index": index})
        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await response.write_eof()
        return response


async def _serve_forever(args: argparse.Namespace) -> int:
    try:
        scripts = load_scripts(Path(args.scripts) if args.scripts else None)
        server = ScriptedModelServer(scripts, default=args.default, host=args.host, port=args.port)
        if args.rate_limit is not None:
            server.rate_limit(args.rate_limit, args.rate_limit_status, after=args.rate_limit_after)
    except ValueError as exc:
        sys.stderr.write(f"scripted model: {exc}\n")
        return 2
    except ScriptError as exc:
        sys.stderr.write(f"scripted model: {exc.message}\n")
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        sys.stderr.write(
            f"scripted model: cannot listen on {args.host}:{args.port}: {exc.strerror}\n"
        )
        return 2
    print(
        f"scripted model listening on {server.url} "
        f"({len(scripts)} scripts, default {args.default})",
        flush=True,
    )
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    await server.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.agents.scripted", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--port", type=int, default=0, help="TCP port on loopback (0: any free port)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--scripts", help="directory of *.json scripts (default: config/scripts)")
    parser.add_argument(
        "--default", default="worker-hello", help="script used without a [script:NAME] marker"
    )
    parser.add_argument(
        "--rate-limit",
        type=float,
        metavar="SECONDS",
        help="refuse every request for SECONDS (429 with a retry-after), as a limited API does",
    )
    parser.add_argument(
        "--rate-limit-status", type=int, choices=(429, 529), default=429, help="429 or 529"
    )
    parser.add_argument(
        "--rate-limit-after",
        type=int,
        default=0,
        metavar="N",
        help="begin the rate limit once N Messages requests have been answered",
    )
    args = parser.parse_args(argv)
    return asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    sys.exit(main())
