"""Sandbox benchmark: start-to-exit latency of ``true`` per backend, and kill latency.

Prints medians and ratios against the ``none`` backend measured in the same run (not a test),
and the product's bwrap (cgroup, uid drop, seccomp, passwd, proc covers) against a raw
``bwrap --unshare-all --die-with-parent <the same binds> -- true`` started directly.

    .venv/bin/python bench/bench_sandbox.py [--runs 20] [--docker-socket S] [--docker-image I]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandbox.base import Sandbox, SandboxSpec
from sandbox.bwrap import BwrapSandbox
from sandbox.cgroups import CgroupLayout, CgroupManager
from sandbox.docker import DockerSandbox
from sandbox.none import NoneSandbox
from sandbox.policy import build_args

HOLD_50 = "for i in $(seq 50); do sleep 300 & done; touch ready; wait"


def _spec(root: Path, argv: list[str], **kw: object) -> SandboxSpec:
    wt = root / uuid.uuid4().hex[:8]
    wt.mkdir()
    return SandboxSpec(
        agent_id=f"bench-{wt.name}",
        argv=argv,
        workdir=wt,
        env={"PATH": "/usr/bin:/bin"},
        log_dir=wt / ".logs",
        **kw,  # type: ignore[arg-type]
    )


async def start_latency(sb: Sandbox, root: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        spec = _spec(root, ["true"])
        t0 = time.perf_counter()
        proc = await sb.start(spec)
        rc = await proc.wait()
        out.append(time.perf_counter() - t0)
        await proc.cleanup()
        if rc != 0:
            raise SystemExit(f"{sb.name}: 'true' exited {rc}")
    return out


async def raw_bwrap_latency(bwrap: str, root: Path, runs: int) -> list[float]:
    """``bwrap --unshare-all --die-with-parent`` with the policy's binds, no more, as we are."""
    out = []
    for _ in range(runs):
        spec = _spec(root, ["true"])
        opts = build_args(spec, bwrap=bwrap).options
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(bwrap, *opts, "--", "true")
        rc = await proc.wait()
        out.append(time.perf_counter() - t0)
        if rc != 0:
            raise SystemExit(f"raw bwrap: 'true' exited {rc}")
    return out


async def kill_latency(sb: Sandbox, root: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        spec = _spec(root, ["sh", "-c", HOLD_50], pids_max=128)
        proc = await sb.start(spec)
        for _ in range(1000):
            if (spec.workdir / "ready").exists():
                break
            await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        await proc.kill(grace_s=0.0)
        await proc.cleanup()
        out.append(time.perf_counter() - t0)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--docker-socket", default="/run/mosaic-podman.sock")
    ap.add_argument("--docker-image", default="localhost/mosaic-busybox:latest")
    args = ap.parse_args()
    parent = f"mosaic-bench-{uuid.uuid4().hex[:8]}"
    backends: dict[str, Sandbox] = {"none": NoneSandbox()}
    bwrap: BwrapSandbox | None = None
    if shutil.which("bwrap"):
        backends["bwrap (no cgroup, rlimits)"] = BwrapSandbox(
            cgroup_parent=parent, layout=CgroupLayout(version=0), allow_no_cgroups=True
        )
        if CgroupManager(parent).usable() is None:
            bwrap = backends["bwrap+cgroup"] = BwrapSandbox(cgroup_parent=parent)
    docker = DockerSandbox(socket=args.docker_socket, image=args.docker_image)
    health = await docker.health()
    if health.ok:
        backends["docker (podman)"] = docker
    else:
        print(f"docker: skipped ({health.detail})")
    root = Path(tempfile.mkdtemp(prefix="mosaic-bench-"))
    root.chmod(0o755)  # a worktree root the sandbox user can reach (no staging)
    private = Path(tempfile.mkdtemp(prefix="mosaic-bench-private-"))  # 0700: staged binds
    try:
        print(f"start-to-exit of `true`, {args.runs} runs, median (ratio to none):")
        base = None
        for name, sb in backends.items():
            runs = args.runs if not name.startswith("docker") else max(5, args.runs // 4)
            med = statistics.median(await start_latency(sb, root, runs))
            base = base or med
            print(f"  {name:28s} {med * 1000:8.1f} ms   x{med / base:5.1f}")
        if bwrap is not None:
            binary = bwrap.binary.path
            raws: list[float] = []
            products: list[float] = []
            stageds: list[float] = []
            for _ in range(args.runs):  # interleaved, so load on the machine hits all three alike
                raws += await raw_bwrap_latency(binary, root, 1)
                products += await start_latency(bwrap, root, 1)
                stageds += await start_latency(bwrap, private, 1)
            raw, product, staged = map(statistics.median, (raws, products, stageds))
            print(f"product bwrap vs raw bwrap ({bwrap.binary.describe()}), same binds, median:")
            print(f"  {'raw bwrap':28s} {raw * 1000:8.1f} ms   x1.0")
            label = "product (cgroup, uid drop)"
            print(f"  {label:28s} {product * 1000:8.1f} ms   x{product / raw:4.2f}")
            print(
                f"  {'product, worktree staged':28s} {staged * 1000:8.1f} ms   x{staged / raw:4.2f}"
            )
        print("kill latency, sandbox holding 50 processes (kill(grace=0) + cleanup), median:")
        for name, sb in backends.items():
            if "rlimits" in name:
                continue
            med = statistics.median(await kill_latency(sb, root, 5))
            print(f"  {name:28s} {med * 1000:8.1f} ms")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(private, ignore_errors=True)
        CgroupManager(parent).remove_parent()


if __name__ == "__main__":
    asyncio.run(main())
