"""Moving bytes for the egress proxy: CONNECT tunnels and forwarded plain-HTTP exchanges.

Everything streams in chunks of at most ``CHUNK`` bytes with backpressure (``drain``); nothing
is buffered whole. A connection on which nothing moved, in either direction, for the idle
timeout is closed (:class:`Idle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from core.net.httphead import (
    Head,
    Malformed,
    Target,
    error_answer,
    forward_request,
    forward_response,
    parse_head,
    read_head,
    response_status,
)

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
T = TypeVar("T")


class Idle:
    """The idle clock of one connection, shared by both directions."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.last = time.monotonic()

    async def within(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()``; ``TimeoutError`` once nothing moved anywhere for the timeout.

        ``make`` builds a fresh awaitable each round (stream reads are safe to cancel).
        """
        while True:
            left = self.last + self.timeout_s - time.monotonic()
            if left <= 0:
                raise TimeoutError("idle connection")
            try:
                async with asyncio.timeout(left):
                    result = await make()
            except TimeoutError:
                continue  # the other direction may have moved meanwhile
            self.last = time.monotonic()
            return result

    async def drain(self, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.timeout_s):
            await writer.drain()
        self.last = time.monotonic()


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, idle: Idle) -> None:
    while data := await idle.within(lambda: src.read(CHUNK)):
        dst.write(data)
        await idle.drain(dst)
    if dst.can_write_eof():
        with contextlib.suppress(OSError):
            dst.write_eof()


async def tunnel(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    idle: Idle,
) -> None:
    """Bytes both ways until both sides are done (half-closes passed on) or it goes idle."""
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_pump(client_reader, up_writer, idle))
            group.create_task(_pump(up_reader, client_writer, idle))
    except* (OSError, TimeoutError) as errors:
        log.debug("tunnel ended: %r", errors.exceptions[0])


async def relay_request(
    head: Head,
    target: Target,
    framing: int | None,
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
    idle: Idle,
) -> None:
    """Forward one request (body per ``framing``, see ``body_framing``) and stream the answer."""
    up_writer.write(forward_request(head, target))
    await idle.drain(up_writer)
    body = asyncio.create_task(_send_body(framing, client_reader, up_writer, idle))
    try:
        await _answer(up_reader, client_writer, idle)
    finally:
        body.cancel()
        await asyncio.gather(body, return_exceptions=True)


async def _answer(
    up_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, idle: Idle
) -> None:
    sent = False
    try:
        while True:
            raw = await idle.within(lambda: read_head(up_reader))
            if raw is None:
                raise Malformed("the upstream closed the connection without an answer")
            head = parse_head(raw)
            status = response_status(head)
            if 100 <= status < 200 and status != 101:
                client_writer.write(raw)  # 100 Continue and friends, as they came
                sent = True
                continue
            client_writer.write(forward_response(head))
            sent = True
            break
    except (Malformed, TimeoutError) as exc:
        if not sent:
            why = "no answer in time" if isinstance(exc, TimeoutError) else str(exc)
            client_writer.write(error_answer(502, f"bad answer from the upstream: {why}"))
            await idle.drain(client_writer)
        return
    await idle.drain(client_writer)
    while data := await idle.within(lambda: up_reader.read(CHUNK)):
        client_writer.write(data)
        await idle.drain(client_writer)


async def _send_body(
    framing: int | None,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    idle: Idle,
) -> None:
    """Copy exactly the request's body; stop quietly on any problem (the answer decides)."""
    try:
        if framing is None:
            return
        if framing >= 0:
            await _copy(framing, reader, writer, idle)
            return
        await _copy_chunked(reader, writer, idle)
    except (OSError, TimeoutError, Malformed, ValueError, asyncio.IncompleteReadError) as exc:
        log.debug("request body relay stopped: %r", exc)
    except asyncio.LimitOverrunError:
        log.debug("request body relay stopped: chunk line too long")


async def _copy(
    length: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: Idle
) -> None:
    left = length
    while left > 0:
        size = min(CHUNK, left)
        data = await idle.within(lambda: reader.read(size))  # noqa: B023 (awaited at once)
        if not data:
            return
        left -= len(data)
        writer.write(data)
        await idle.drain(writer)


async def _copy_chunked(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle: Idle
) -> None:
    while True:
        line = await idle.within(lambda: reader.readuntil(b"\r\n"))
        digits = line.split(b";", 1)[0].strip()
        if not digits or len(digits) > 16 or digits.strip(b"0123456789abcdefABCDEF"):
            raise Malformed("malformed chunk size")
        size = int(digits, 16)
        writer.write(line)
        if size == 0:
            while (trailer := await idle.within(lambda: reader.readuntil(b"\r\n"))) != b"\r\n":
                writer.write(trailer)
            writer.write(b"\r\n")
            await idle.drain(writer)
            return
        await _copy(size, reader, writer, idle)
        end = await idle.within(lambda: reader.readexactly(2))
        if end != b"\r\n":
            raise Malformed("malformed chunk")
        writer.write(end)
        await idle.drain(writer)
