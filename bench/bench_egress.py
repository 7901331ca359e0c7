"""Benchmark of the egress path: client -> forwarder (TCP) -> proxy (Unix socket) -> upstream.

    .venv/bin/python bench/bench_egress.py [--requests 300] [--mb 200] [--parallel 16]

The upstream (a minimal HTTP server and a TCP sink/source) and the clients run in their own
processes; the proxy runs in this one, so this process's CPU is the proxy's. The clients run as
the forwarder's "agent" (no sandbox: the forwarder is the same script either way). Baselines are
measured in the same run: the same clients talking to the upstream directly.

1. Latency of one plain-HTTP request (new connection each time), sequential: mean per request
   direct and through forwarder + proxy, and the ratio.
2. Throughput of a CONNECT tunnel: ``--mb`` MiB downloaded through forwarder + proxy against the
   same download direct.
3. ``--parallel`` clients at once, each making requests for a second: requests/s through the
   path, proxy CPU seconds, and the worst event-loop lag of this process.

Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.models import EventType  # noqa: E402
from core.net import Allowlist, EgressProxy  # noqa: E402
from sandbox.forwarder import forwarder_argv, forwarder_path  # noqa: E402

UPSTREAM = r"""
import asyncio, sys
BIG = b"x" * (1 << 20)
async def http(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
    finally:
        writer.close()
async def source(reader, writer):
    mb = int((await reader.readline()).strip())
    for _ in range(mb):
        writer.write(BIG)
        await writer.drain()
    writer.close()
async def main():
    a = await asyncio.start_server(http, "127.0.0.1", 0, backlog=1024)
    b = await asyncio.start_server(source, "127.0.0.1", 0)
    print(a.sockets[0].getsockname()[1], b.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

CLIENT = r"""
import json, socket, sys, time, threading
mode, http_port, source_port, requests, mb, parallel = sys.argv[1], *map(int, sys.argv[2:7])
PROXY = ("127.0.0.1", int(sys.argv[7])) if len(sys.argv) > 7 else None

def get():
    if PROXY:
        s = socket.create_connection(PROXY)
        s.sendall(b"GET http://bench.test:%d/ HTTP/1.1\r\n\r\n" % http_port)
    else:
        s = socket.create_connection(("127.0.0.1", http_port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    assert data.endswith(b"hello"), data

def download():
    if PROXY:
        s = socket.create_connection(PROXY)
        s.sendall(b"CONNECT bench.test:%d HTTP/1.1\r\n\r\n" % source_port)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += s.recv(1)
    else:
        s = socket.create_connection(("127.0.0.1", source_port))
    s.sendall(b"%d\n" % mb)
    got = 0
    while chunk := s.recv(1 << 20):
        got += len(chunk)
    assert got == mb << 20, got

out = {}
get()
t = time.perf_counter()
for _ in range(requests):
    get()
out["latency_s"] = (time.perf_counter() - t) / requests
t = time.perf_counter()
download()
out["mib_per_s"] = mb / (time.perf_counter() - t)
done = [0] * parallel
stop = time.perf_counter() + 1.0
def worker(i):
    while time.perf_counter() < stop:
        get()
        done[i] += 1
threads = [threading.Thread(target=worker, args=(i,)) for i in range(parallel)]
for th in threads: th.start()
for th in threads: th.join()
out["parallel_rps"] = sum(done) / 1.0
print(json.dumps(out))
"""


async def lag_probe(worst: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        t = loop.time()
        await asyncio.sleep(0.005)
        worst[0] = max(worst[0], loop.time() - t - 0.005)


async def run_client(argv: list[str]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"client failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=16)
    args = parser.parse_args()

    upstream = await asyncio.create_subprocess_exec(
        sys.executable, "-c", UPSTREAM, stdout=asyncio.subprocess.PIPE
    )
    assert upstream.stdout is not None
    http_port, source_port = map(int, (await upstream.stdout.readline()).split())
    io_dir = Path(tempfile.mkdtemp(prefix="bench-egress-"))
    events = 0

    async def emit(agent_id: str, kind: EventType, data: dict[str, Any]) -> None:
        nonlocal events
        events += 1

    async def resolver(name: str) -> list[str]:
        return ["127.0.0.1"]

    allowlist = Allowlist.parse(f"bench.test:{http_port}, bench.test:{source_port}")
    proxy = EgressProxy(allowlist, emit, resolver=resolver, max_connections=256)
    common = [str(http_port), str(source_port), str(args.requests), str(args.mb)]
    common.append(str(args.parallel))
    try:
        direct = await run_client([sys.executable, "-c", CLIENT, "direct", *common])
        async with proxy.serve_agent("bench", io_dir) as endpoint:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            client = [sys.executable, "-c", CLIENT, "proxied", *common, str(port)]
            argv = forwarder_argv(
                sys.executable, forwarder_path(), {port: endpoint.socket_path}, client
            )
            me = psutil.Process()
            cpu0 = sum(me.cpu_times()[:2])
            worst = [0.0]
            stop = asyncio.Event()
            probe_task = asyncio.create_task(lag_probe(worst, stop))
            proxied = await run_client(argv)
            stop.set()
            await probe_task
            cpu = sum(me.cpu_times()[:2]) - cpu0
            counts = endpoint.counts
    finally:
        upstream.kill()
        await upstream.wait()
        shutil.rmtree(io_dir, ignore_errors=True)

    print(f"egress path (machine shared; figures are indicative), {args.requests} requests:")
    via = "via forwarder+proxy"
    d, p = direct["latency_s"] * 1e3, proxied["latency_s"] * 1e3
    print(f"  request latency   direct {d:7.3f} ms    {via} {p:7.3f} ms    x{p / d:.2f}")
    d, p = direct["mib_per_s"], proxied["mib_per_s"]
    print(f"  tunnel throughput direct {d:7.0f} MiB/s {via} {p:7.0f} MiB/s x{p / d:.2f}")
    d, p = direct["parallel_rps"], proxied["parallel_rps"]
    print(f"  {args.parallel} parallel clients: direct {d:7.0f} req/s {via} {p:7.0f} req/s")
    print(f"  proxy CPU {cpu:.2f} s, worst loop lag {worst[0] * 1e3:.1f} ms, counts {counts}")
    print(f"  events published: {events}")


if __name__ == "__main__":
    asyncio.run(main())
