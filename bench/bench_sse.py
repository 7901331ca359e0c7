"""SSE fan-out benchmark (issue 14, SPEC §18). Not a test: prints figures.

Delivery delay of events, from just before ``StateStore.emit`` (the Lua XADD + PUBLISH the
lifecycle uses) to their arrival at each subscriber, in separate client processes:

1. baseline: one raw Valkey pub/sub subscriber on ``orchestrator:events`` (the same emits);
2. ``GET /agents/events`` with 1 subscriber;
3. ``GET /agents/events`` with 100 subscribers (goal: p99 <= 20 ms).

Each is measured paced (``--rate`` events/s) and as a burst (as fast as ``emit`` goes), in the
same run on the same embedded server. For the fan-out, ``all`` is every (event, subscriber)
delay and ``last`` is the delay until the last of the subscribers has an event. The server's
event-loop lag is sampled during the 100-subscriber phases.

    .venv/bin/python bench/bench_sse.py [--events 1000] [--rate 200] [--subscribers 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from core.api.app import serve
from core.engine import Engine
from core.models import Event, EventType
from core.settings import load_settings
from core.store import CHANNEL
from core.valkey import EmbeddedValkey

# -- client processes -------------------------------------------------------------------------


def _delay(payload: bytes, tag: bytes, now: float) -> float | None:
    """The delay of one of this phase's events (cheap: the client must not be the bottleneck)."""
    if tag not in payload:
        return None
    start = payload.index(b'"t":', payload.index(tag)) + 4
    end = payload.index(b"}", start)
    return (now - float(payload[start:end])) * 1000


async def _sse_client(url: str, streams: int, tag: bytes, count: int) -> list[list[float]]:
    delays: list[list[float]] = [[] for _ in range(streams)]
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        responses = [await http.get(url + "/agents/events") for _ in range(streams)]
        for resp in responses:
            assert resp.status == 200, resp.status
            await resp.content.readline()
        print("ready", flush=True)

        async def read(i: int, resp: aiohttp.ClientResponse) -> None:
            rest = b""
            async for chunk in resp.content.iter_any():
                now = time.monotonic()
                *blocks, rest = (rest + chunk).split(b"\n\n")
                for block in blocks:
                    for line in block.split(b"\n"):
                        if line.startswith(b"data: "):
                            d = _delay(line[6:], tag, now)
                            if d is not None:
                                delays[i].append(d)
                if len(delays[i]) >= count:
                    return

        await asyncio.gather(*(read(i, r) for i, r in enumerate(responses)))
        for resp in responses:
            resp.close()
    return delays


async def _pubsub_client(valkey: str, tag: bytes, count: int) -> list[list[float]]:
    client = aioredis.Redis.from_url(valkey)
    pubsub = client.pubsub()
    await pubsub.subscribe(CHANNEL)
    await pubsub.get_message(timeout=1)  # the subscribe confirmation
    print("ready", flush=True)
    delays: list[float] = []
    while len(delays) < count:
        msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
        now = time.monotonic()
        if msg and msg["type"] == "message":
            d = _delay(msg["data"], tag, now)
            if d is not None:
                delays.append(d)
    await pubsub.aclose()
    await client.aclose()
    return [delays]


def client_main(argv: list[str]) -> None:
    mode, target, streams, name, count = argv
    tag = f'"bench":"{name}"'.encode()
    if mode == "sse":
        delays = asyncio.run(_sse_client(target, int(streams), tag, int(count)))
    else:
        delays = asyncio.run(_pubsub_client(target, tag, int(count)))
    print(json.dumps(delays), flush=True)


# -- the orchestrator side --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def clients(mode: str, target: str, streams: int, procs: int, tag: str, count: int) -> Any:
    """Client processes holding ``streams`` subscriptions in all, ready when the block starts."""
    per = [streams // procs + (1 if i < streams % procs else 0) for i in range(procs)]
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--client",
            mode,
            target,
            str(n),
            tag,
            str(count),
            stdout=asyncio.subprocess.PIPE,
        )
        for n in per
        if n
    ]
    for child in children:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 60)
        assert line.strip() == b"ready", line
    result: list[list[float]] = []
    yield result
    for child in children:
        out, _ = await asyncio.wait_for(child.communicate(), 120)
        result.extend(json.loads(out.splitlines()[-1]))


async def emit_all(
    emit: Callable[[Event], Awaitable[Any]], tag: str, count: int, rate: float
) -> float:
    """Emits ``count`` events at ``rate`` a second (0: as fast as it goes); returns the rate."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(count):
        if rate > 0:
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
        data = {"bench": tag, "seq": i, "t": time.monotonic()}
        await emit(Event(type=EventType.GATE_PASSED, task_id=f"B-{i}", data=data))
    return count / (loop.time() - start)


@contextlib.asynccontextmanager
async def loop_lag() -> AsyncIterator[list[float]]:
    lags: list[float] = []

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(0.01)
            lags.append((loop.time() - t0 - 0.01) * 1000)

    task = asyncio.create_task(probe())
    try:
        yield lags
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Delays(list[list[float]]):
    """Delays (ms) per subscriber, with the phase's emit rate and the server's CPU time."""

    rate = 0.0
    cpu_s = 0.0


async def phase(
    mode: str,
    target: str,
    streams: int,
    procs: int,
    tag: str,
    count: int,
    rate: float,
    emit: Callable[[Event], Awaitable[Any]],
) -> Delays:
    result = Delays()
    async with clients(mode, target, streams, procs, tag, count) as got:
        cpu = time.process_time()
        result.rate = await emit_all(emit, tag, count, rate)
    result.cpu_s = time.process_time() - cpu
    result.extend(got)
    return result


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def line(name: str, values: list[float], base: float | None = None) -> str:
    p50, p99 = pct(values, 0.5), pct(values, 0.99)
    ratio = f"  p99 x{p99 / base:.1f} baseline" if base else ""
    return f"  {name:<34} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   max {max(values):7.2f} ms{ratio}"


async def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-sse-"))
    valkey = EmbeddedValkey(root / "valkey")
    await valkey.start()
    url_valkey = f"unix://{valkey.socket}"
    settings = load_settings(
        valkey_url=url_valkey,
        mosaic_state_dir=root / "state",
        sandbox_backend="none",
        mosaic_agent_command="true",
        event_stream_maxlen=max(10_000, args.events * 2),
    )
    n, rate, subs, procs = args.events, args.rate, args.subscribers, args.procs
    print(f"SSE fan-out: {n} events a phase, paced at {rate}/s or burst; {os.cpu_count()} CPUs")
    try:
        async with (
            Engine.running(settings) as engine,
            serve(
                engine,
                host="127.0.0.1",
                port=0,
                api_key=None,
                max_body_bytes=1 << 20,
                sse_max_subscribers=subs + 10,
            ) as runner,
        ):
            host, port = runner.addresses[0][:2]
            api = f"http://{host}:{port}"
            emit = engine.store.emit
            lags: list[float] = []
            goal = 0.0
            for pace, r in (("paced", rate), ("burst", 0.0)):
                got = await phase("pubsub", url_valkey, 1, 1, f"pubsub-{pace}", n, r, emit)
                base = pct(got[0], 0.99)
                print(f"{pace} ({got.rate:.0f} events/s):")
                print(line("Valkey pub/sub, 1 subscriber", got[0]))
                got = await phase("sse", api, 1, 1, f"sse1-{pace}", n, r, emit)
                print(line("SSE, 1 subscriber", got[0], base))
                async with loop_lag() as lag:
                    got = await phase("sse", api, subs, procs, f"sse{subs}-{pace}", n, r, emit)
                lags += lag
                assert len(got) == subs and all(len(d) == n for d in got)
                every = [d for per in got for d in per]
                last = [max(per[i] for per in got) for i in range(n)]
                print(line(f"SSE, {subs} subscribers (all)", every, base))
                print(line(f"SSE, {subs} subscribers (last)", last, base))
                print(f"  server CPU {got.cpu_s / (n * subs) * 1e6:.1f} us per delivery")
                if pace == "paced":
                    goal = pct(every, 0.99)
            print(line(f"server loop lag, {subs} subscribers", lags))
            verdict = "met" if goal <= 20 else "MISSED"
            print(f"goal p99 <= 20 ms with {subs} subscribers (paced): {verdict}")
    finally:
        await valkey.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
