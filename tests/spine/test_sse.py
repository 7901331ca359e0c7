"""SSE fan-out (SPEC §18): a bounded number of streams, none able to hold up another.

Real HTTP on loopback against a real engine on the session's Redis server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp import web

from core.api.app import create_app
from core.api.sse import SSE_STREAMS, EventStreams
from core.engine_api import EngineAPI
from core.events import Subscription
from core.models import Event, EventType
from core.store import StateStore
from tests.spine.conftest import Orchestrator, OrchestratorFactory


@contextlib.asynccontextmanager
async def api(engine: Any, **options: Any) -> AsyncIterator[tuple[str, EventStreams]]:
    """The API over ``engine`` on a loopback port, with its own SSE options."""
    app = create_app(cast(EngineAPI, engine), **options)
    runner = web.AppRunner(app, shutdown_timeout=2.0, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}", app[SSE_STREAMS]
    finally:
        await runner.cleanup()


async def eventually(check: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)
    assert check(), what


@dataclass
class Frame:
    id: str
    type: str
    data: bytes


@dataclass
class Reader:
    """One SSE client that parses frames as they arrive."""

    response: aiohttp.ClientResponse
    frames: list[Frame] = field(default_factory=list)
    comments: int = 0
    ended: bool = False
    _rest: bytes = b""

    async def run(self, stop: Callable[[Frame], bool] = lambda f: False) -> None:
        """Reads until a frame satisfies ``stop`` (or the stream ends)."""
        try:
            async for chunk in self.response.content.iter_any():
                *blocks, self._rest = (self._rest + chunk).split(b"\n\n")
                found = False
                for block in blocks:
                    if block.startswith(b":"):
                        self.comments += 1
                        continue
                    fields = dict(line.split(b": ", 1) for line in block.split(b"\n"))
                    frame = Frame(
                        fields[b"id"].decode(), fields[b"event"].decode(), fields[b"data"]
                    )
                    self.frames.append(frame)
                    found = found or stop(frame)
                if found:
                    return
            self.ended = True
        except aiohttp.ClientPayloadError:
            self.ended = True

    @property
    def ids(self) -> list[str]:
        return [f.id for f in self.frames]


async def open_stream(http: aiohttp.ClientSession, url: str) -> Reader:
    response = await http.get(url + "/agents/events")
    assert response.status == 200, await response.text()
    assert await response.content.readline() == b": connected\n"
    await response.content.readline()
    return Reader(response)


def id_key(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq)


def increasing(ids: list[str]) -> bool:
    keys = [id_key(i) for i in ids]
    return all(a < b for a, b in itertools.pairwise(keys))


async def test_streams_beyond_the_limit_get_503_until_one_closes(orch: Orchestrator) -> None:
    async with (
        api(orch.engine, sse_max_subscribers=2) as (url, streams),
        aiohttp.ClientSession() as http,
    ):
        first = await open_stream(http, url)
        second = await open_stream(http, url)
        async with http.get(url + "/agents/events") as refused:
            assert refused.status == 503
            body = await refused.json()
            assert body["error"]["code"] == "too_many_streams"
            assert "SSE_MAX_SUBSCRIBERS" in body["error"]["message"]
            assert body["error"]["details"] == {"limit": 2}
            assert refused.headers["Retry-After"]
        assert streams.slots == 2

        first.response.close()  # the client goes away without a word
        await eventually(lambda: streams.slots == 1, what="the closed stream kept its slot")
        third = await open_stream(http, url)
        assert streams.slots == 2

        event = await orch.engine.store.emit(Event(type=EventType.QUEUE_PAUSED))
        for reader in (second, third):
            await asyncio.wait_for(reader.run(stop=lambda f: f.id == event.id), 10)
            assert reader.ids == [event.id]
        second.response.close()
        third.response.close()
        await eventually(lambda: streams.slots == 0)


async def test_server_shutdown_ends_every_stream_promptly(orch: Orchestrator) -> None:
    async with aiohttp.ClientSession() as http:
        async with api(orch.engine, sse_max_subscribers=3) as (url, streams):
            readers = [await open_stream(http, url) for _ in range(3)]
            tasks = [asyncio.create_task(r.run()) for r in readers]
            loop = asyncio.get_running_loop()
            started = loop.time()
        # leaving the block ran the server's shutdown: every stream ended, no slot is held
        assert streams.slots == 0 and not streams.open
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert all(r.ended for r in readers)
        # the streams did not sit out the server's 2 s grace period
        assert loop.time() - started < 2.0


class FailingSource:
    """An engine whose event source yields one event, then fails (as a lost Valkey would)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def events(self, last_event_id: str | None = None) -> AsyncIterator[Event]:
        yield Event(id="1-0", type=EventType.QUEUE_PAUSED)
        await self.release.wait()
        raise ConnectionError("Valkey went away")


async def test_a_failing_event_source_ends_the_stream_and_frees_its_slot() -> None:
    source = FailingSource()
    async with (
        api(source, sse_max_subscribers=1) as (url, streams),
        aiohttp.ClientSession() as http,
    ):
        reader = await open_stream(http, url)
        async with http.get(url + "/agents/events") as refused:
            assert refused.status == 503
        source.release.set()
        await asyncio.wait_for(reader.run(), 10)
        assert reader.ids == ["1-0"] and reader.ended
        await eventually(lambda: streams.slots == 0)
        again = await open_stream(http, url)
        again.response.close()


async def test_malformed_last_event_id_is_refused_before_streaming(orch: Orchestrator) -> None:
    headers = {"Last-Event-ID": "not-an-id"}
    async with orch.http.get(orch.url + "/agents/events", headers=headers) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_request"


def stuck_client(url: str) -> socket.socket:
    """A client that asks for the stream and never reads a byte of it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /agents/events HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    return sock


def connection_ended(sock: socket.socket) -> bool:
    """Reads what the server sent; True once it closed or reset the connection."""
    sock.setblocking(False)
    try:
        while True:
            if not sock.recv(1 << 20):
                return True
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


async def flood_of(store: StateStore, count: int) -> list[Event]:
    """``count`` events of 16 kB each."""
    pad = "x" * 16_384
    return [
        await store.emit(Event(type=EventType.GATE_STARTED, data={"i": i, "pad": pad}))
        for i in range(count)
    ]


def blocked(streams: EventStreams) -> int:
    """Streams whose write waits for a client that does not read."""
    return sum(1 for writer in streams.open.values() if writer.blocked)


async def test_a_client_that_stops_reading_delays_no_one_and_is_closed(
    orch: Orchestrator,
) -> None:
    store = orch.engine.store
    async with (
        api(orch.engine, sse_write_timeout_s=5.0) as (url, streams),
        aiohttp.ClientSession() as http,
    ):
        stuck = stuck_client(url)
        try:
            await eventually(lambda: streams.slots == 1, what="the stuck client's stream")
            healthy = await open_stream(http, url)

            # 16 MB of events: far more than the stuck client's socket and buffers hold
            flood = await flood_of(store, 1000)
            await asyncio.wait_for(healthy.run(stop=lambda f: f.id == flood[-1].id), 30)
            assert healthy.ids == [e.id for e in flood]
            await eventually(lambda: blocked(streams) == 1, what="the stuck stream never blocked")

            # the next events reach the healthy client while the stuck stream still exists
            marks = [await store.emit(Event(type=EventType.QUEUE_PAUSED)) for _ in range(3)]
            await asyncio.wait_for(healthy.run(stop=lambda f: f.id == marks[-1].id), 10)
            assert healthy.ids[-3:] == [e.id for e in marks]
            assert blocked(streams) == 1 and streams.stalled == 0 and streams.slots == 2

            # the stuck stream is closed by the server once its writes stall
            await eventually(lambda: streams.stalled == 1, timeout=30, what="stuck stream kept")
            await eventually(lambda: streams.slots == 1)
            await eventually(lambda: connection_ended(stuck), what="connection not closed")

            # and the healthy one goes on
            last = await store.emit(Event(type=EventType.QUEUE_RESUMED))
            await asyncio.wait_for(healthy.run(stop=lambda f: f.id == last.id), 10)
            assert increasing(healthy.ids)
            healthy.response.close()
        finally:
            stuck.close()


async def test_shutdown_is_prompt_with_a_client_that_stops_reading(orch: Orchestrator) -> None:
    async with aiohttp.ClientSession() as http, contextlib.AsyncExitStack() as stack:
        async with api(orch.engine, sse_write_timeout_s=30.0) as (url, streams):
            stuck = stack.enter_context(stuck_client(url))
            healthy = await open_stream(http, url)
            flood = await flood_of(orch.engine.store, 600)
            await asyncio.wait_for(healthy.run(stop=lambda f: f.id == flood[-1].id), 30)
            await eventually(lambda: blocked(streams) == 1, what="the stuck stream never blocked")
            reading = asyncio.create_task(healthy.run())
            loop = asyncio.get_running_loop()
            started = loop.time()
        assert loop.time() - started < 2.0  # neither the write timeout nor the grace period
        assert streams.slots == 0 and not streams.open
        await asyncio.wait_for(reading, 5)
        assert healthy.ended
        await eventually(lambda: connection_ended(stuck), what="connection not closed")


async def test_a_hundred_subscribers_each_get_every_event_in_order_under_load(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    agents = 4
    async with (
        orchestrator_factory(
            mosaic_agent_command="echo hi",
            max_concurrent_agents=agents,
            orchestrator_queue_concurrency=agents,
        ) as orch,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http,
    ):
        store = orch.engine.store
        readers = await asyncio.gather(*(open_stream(http, orch.url) for _ in range(100)))
        start = await store.last_event_id()
        done = asyncio.Event()
        end_ids: list[str] = []

        def at_end(frame: Frame) -> bool:
            return bool(end_ids) and frame.id == end_ids[0]

        tasks = [asyncio.create_task(r.run(stop=at_end)) for r in readers]

        async def load() -> None:  # unrelated events while the agents run: 500 to 3000
            count = 0
            while count < 500 or (not done.is_set() and count < 3000):
                for _ in range(20):
                    await store.emit(Event(type=EventType.GATE_PASSED, data={"load": True}))
                count += 20
                await asyncio.sleep(0.005)

        loader = asyncio.create_task(load())
        ids = [await orch.spawn(f"FAN-{i}", origin) for i in range(agents)]
        for agent_id in ids:
            await orch.wait_status(agent_id, "completed", timeout=60)
        done.set()
        await loader
        end_ids.append((await store.emit(Event(type=EventType.QUEUE_RESUMED))).id)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

        expected: list[Event] = []
        cursor = start
        while page := await store.events_after(cursor):
            expected += page
            cursor = page[-1].id
        assert expected[-1].id == end_ids[0]
        assert sum(1 for e in expected if e.data.get("load")) >= 500
        for agent_id in ids:
            lifecycle = [e.type.value for e in expected if e.agent_id == agent_id]
            steps = ["agent.spawning", "agent.running", "agent.completed"]
            assert [t for t in lifecycle if t in steps] == steps, lifecycle
        for reader in readers:
            assert reader.ids == [e.id for e in expected]
            assert increasing(reader.ids)
            by_id = {e.id: e for e in expected}
            assert [f.type for f in reader.frames] == [by_id[i].type.value for i in reader.ids]
        for reader in readers:
            reader.response.close()


async def test_a_subscriber_that_falls_behind_catches_up_from_the_stream(
    orch: Orchestrator,
) -> None:
    """Its buffer overflows; it reads the stream itself and misses nothing, in order."""
    bus = orch.engine.bus
    slow = Subscription(bus, None, buffer=10)  # a tiny buffer, to overflow it
    emitted = [
        await orch.engine.store.emit(Event(type=EventType.GATE_STARTED, data={"i": i}))
        for i in range(50)
    ]
    await eventually(lambda: slow.overflows > 0)
    got: list[str] = []
    async with asyncio.timeout(10):
        async for event in slow:
            got.append(event.id)
            if event.id == emitted[-1].id:
                break
    assert got == [e.id for e in emitted]
    # it is live again: a new event arrives through the fan-out
    more = await orch.engine.store.emit(Event(type=EventType.QUEUE_PAUSED))
    batch = await asyncio.wait_for(slow.next_batch(), 10)
    assert batch is not None and [e.id for e in batch] == [more.id]
    await slow.aclose()
    assert slow not in bus._subscribers
