"""Benchmark of shared rate limits: many agents hit by one 429 episode at once.

    .venv/bin/python bench/bench_ratelimit.py [--agents 50] [--limit-s 2] [--status 429]

The scripted model refuses every request for ``--limit-s`` seconds (with a ``retry-after``) while
``--agents`` clients each send one request, at moments spread over the limit's first 80% (the same
moments in both runs). Two runs, same machine, one after the other:

- gateway: each client (the real SDK, ``max_retries=0``) talks to its own gateway socket; the
  gateway holds every request until the limit ends, then retries it;
- baseline: each client (the real SDK with its own retries, ``max_retries=5``) talks to the model
  directly, honouring the ``retry-after`` itself, as agents do without a shared limit.

Printed: requests the model refused (the load a limited upstream sees), how long after the limit
ended the last answer came, and how many clients failed. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anthropic
import httpx2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.agents import ModelGateway, PriceTable  # noqa: E402
from core.agents.scripted import ScriptedModelServer  # noqa: E402
from core.models import Usage  # noqa: E402

HELLO = {
    "model": "scripted-1",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi [script:reviewer-approve]"}],
}


async def one(client: anthropic.AsyncAnthropic, delay: float) -> float | None:
    await asyncio.sleep(delay)
    try:
        await client.messages.create(**HELLO)  # type: ignore[arg-type]
    except anthropic.APIError:
        return None
    finally:
        await client.close()
    return time.monotonic()


def spread(agents: int, limit_s: float) -> list[float]:
    """When each client sends: spread over the first 80% of the limit, the same in both runs."""
    rng = random.Random(7)
    return [rng.uniform(0, 0.8 * limit_s) for _ in range(agents)]


def report(name: str, server: ScriptedModelServer, ends: list[float | None], end: float) -> None:
    done = [t - end for t in ends if t is not None]
    late = f"{max(done):.2f}s (median {statistics.median(done):.2f}s)" if done else "-"
    print(
        f"{name:9} refused by the model: {len(server.limited):4}   "
        f"last answer after the limit: {late}   failed: {ends.count(None)}"
    )


async def through_gateway(agents: int, limit_s: float, status: int) -> None:
    async def no_usage(agent_id: str, usage: Usage) -> None:
        return None

    root = Path(tempfile.mkdtemp(prefix="mosaic-rl-"))
    try:
        async with ScriptedModelServer() as server, contextlib.AsyncExitStack() as stack:
            gateway = ModelGateway(server.url, "bench-key", PriceTable.load(), no_usage)
            stack.push_async_callback(gateway.close)
            clients = []
            for i in range(agents):
                endpoint = await stack.enter_async_context(
                    gateway.serve_agent(f"a{i}", root / f"a{i}", None)
                )
                http = httpx2.AsyncClient(
                    transport=httpx2.AsyncHTTPTransport(uds=str(endpoint.socket_path))
                )
                clients.append(
                    anthropic.AsyncAnthropic(
                        api_key=endpoint.token,
                        base_url="http://gateway",
                        http_client=http,
                        max_retries=0,
                    )
                )
            delays = spread(agents, limit_s)
            server.rate_limit(limit_s, status)
            end = time.monotonic() + limit_s
            ends = await asyncio.gather(*(one(c, d) for c, d in zip(clients, delays, strict=True)))
            report("gateway", server, list(ends), end)
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def direct(agents: int, limit_s: float, status: int) -> None:
    async with ScriptedModelServer() as server:
        clients = [
            anthropic.AsyncAnthropic(api_key="bench", base_url=server.url, max_retries=5)
            for _ in range(agents)
        ]
        delays = spread(agents, limit_s)
        server.rate_limit(limit_s, status)
        end = time.monotonic() + limit_s
        ends = await asyncio.gather(*(one(c, d) for c, d in zip(clients, delays, strict=True)))
        report("baseline", server, list(ends), end)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--limit-s", type=float, default=2.0)
    parser.add_argument("--status", type=int, choices=(429, 529), default=429)
    args = parser.parse_args()
    print(
        f"{args.agents} clients, the model refuses everything for {args.limit_s:g}s ({args.status})"
    )
    await through_gateway(args.agents, args.limit_s, args.status)
    await direct(args.agents, args.limit_s, args.status)


if __name__ == "__main__":
    asyncio.run(main())
