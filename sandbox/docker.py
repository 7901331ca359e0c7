"""The ``docker`` backend: one container per agent over the Docker Engine API (Unix socket).

Talks HTTP to the engine with ``aiohttp`` (works with Docker and with ``podman system service``).
A container gets the worktree bind-mounted read-write at its host path (its working directory),
``ro_binds``/``rw_binds``/``readonly_paths`` as binds, hidden directories under a bound path
covered by an empty read-only tmpfs, memory/CPU/pids limits, no network, every capability dropped,
``no-new-privileges``, a read-only root filesystem with a fresh ``/tmp``, and the labels
``mosaic.agent_id`` and ``mosaic.scope`` (the orchestrator instance's scope, see
``sandbox/factory.py``) so that reconciliation finds its own containers, and only those.
stdout/stderr are streamed into ``log_dir``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import struct
from pathlib import Path
from signal import Signals
from typing import Any

import aiohttp

from sandbox.base import SandboxError, SandboxHealth, SandboxSpec, SandboxStats
from sandbox.identity import SANDBOX_HOME, SandboxUser
from sandbox.policy import validate_spec

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "python:3.11-slim-bookworm"
LABEL = "mosaic.agent_id"
SCOPE_LABEL = "mosaic.scope"
_API = "http://docker/v1.41"


def default_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://") :]
    return "/var/run/docker.sock"


class DockerClient:
    """Minimal Engine API client: one short-lived connection per call (cheap on a Unix socket)."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def _session(self, timeout: float | None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=self.socket),
            timeout=aiohttp.ClientTimeout(total=timeout),
        )

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        timeout: float | None = 30.0,
        ok: tuple[int, ...] = (200, 201, 204, 304),
    ) -> tuple[int, Any]:
        try:
            async with (
                self._session(timeout) as session,
                session.request(method, _API + path, json=body, params=params) as resp,
            ):
                raw = await resp.read()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise SandboxError(
                f"cannot reach the Docker engine at {self.socket}: {exc or type(exc).__name__}"
            ) from exc
        data: Any = None
        if raw:
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw.decode(errors="replace")
        if status not in ok:
            message = data.get("message") if isinstance(data, dict) else data
            raise SandboxError(f"Docker engine: {method} {path} failed ({status}): {message}")
        return status, data

    async def stream_logs(self, cid: str, out: Path, err: Path) -> None:
        """Follow a container's stdout/stderr (multiplexed stream) into two files until it ends."""
        params = {"follow": "1", "stdout": "1", "stderr": "1"}
        files = await asyncio.to_thread(lambda: (open(out, "ab"), open(err, "ab")))  # noqa: SIM115
        try:
            async with (
                self._session(None) as session,
                session.get(f"{_API}/containers/{cid}/logs", params=params) as resp,
            ):
                while True:
                    try:
                        header = await resp.content.readexactly(8)
                    except asyncio.IncompleteReadError:
                        return
                    kind, size = header[0], struct.unpack(">I", header[4:])[0]
                    payload = await resp.content.readexactly(size)
                    target = files[1] if kind == 2 else files[0]
                    await asyncio.to_thread(_append, target, payload)
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError) as exc:
            log.warning("container log stream ended", extra={"container": cid, "error": str(exc)})
        finally:
            for f in files:
                f.close()


def _append(f: Any, data: bytes) -> None:
    f.write(data)
    f.flush()


class DockerProcess:
    """A running container. Every method is safe after the container has ended."""

    def __init__(self, agent_id: str, client: DockerClient, cid: str, logs: asyncio.Task[None]):
        self.agent_id = agent_id
        self._client = client
        self._cid = cid
        self._logs = logs
        self._returncode: int | None = None
        self._last = SandboxStats()
        self._removed = False
        self._pending: set[asyncio.Task[Any]] = set()

    @property
    def pid(self) -> int | None:
        return None

    @property
    def handle(self) -> dict[str, str]:
        return {"backend": "docker", "container": self._cid, "socket": self._client.socket}

    async def wait(self) -> int:
        if self._returncode is None:
            _, data = await self._client.request(
                "POST", f"/containers/{self._cid}/wait", timeout=None
            )
            self._returncode = int(data.get("StatusCode", -1)) if isinstance(data, dict) else -1
            await self.stats()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._logs), 5)
        return self._returncode

    def signal(self, sig: Signals) -> None:
        task = asyncio.get_running_loop().create_task(self._signal(sig))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _signal(self, sig: Signals) -> None:
        with contextlib.suppress(SandboxError):
            await self._client.request(
                "POST", f"/containers/{self._cid}/kill", params={"signal": sig.name}
            )

    async def kill(self, grace_s: float = 5.0) -> None:
        if self._removed:
            return
        params = {"t": str(max(0, round(grace_s)))}
        await self._client.request(
            "POST", f"/containers/{self._cid}/stop", params=params, timeout=grace_s + 30
        )

    async def stats(self) -> SandboxStats:
        if self._removed:
            return self._last
        try:
            _, st = await self._client.request(
                "GET", f"/containers/{self._cid}/stats", params={"stream": "false"}
            )
            _, info = await self._client.request("GET", f"/containers/{self._cid}/json")
        except SandboxError:
            return self._last
        st = st if isinstance(st, dict) else {}
        info = info if isinstance(info, dict) else {}
        cpu = (st.get("cpu_stats") or {}).get("cpu_usage", {}).get("total_usage", 0)
        mem = (st.get("memory_stats") or {}).get("usage", 0)
        pids = (st.get("pids_stats") or {}).get("current", 0)
        oom = bool((info.get("State") or {}).get("OOMKilled"))
        self._last = SandboxStats(
            cpu_seconds=max(cpu / 1e9, self._last.cpu_seconds),
            memory_bytes=int(mem or 0),
            pids=int(pids or 0),
            oom_killed=oom or self._last.oom_killed,
        )
        return self._last

    async def cleanup(self) -> None:
        if self._removed:
            return
        await self.stats()
        with contextlib.suppress(SandboxError):
            await self._client.request(
                "DELETE", f"/containers/{self._cid}", params={"force": "1", "v": "1"}, ok=(204, 404)
            )
        self._removed = True
        self._logs.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._logs


def container_config(
    spec: SandboxSpec, image: str, scope: str | None = None, user: SandboxUser | None = None
) -> dict[str, Any]:
    """The Engine API create body for ``spec`` (pure: unit-tested on its own).

    With ``user`` the container's processes run as that host uid/gid (never root), with a
    private size-limited home."""
    workdir = os.path.abspath(spec.workdir)
    binds = [f"{workdir}:{workdir}:rw"]
    binds += [f"{os.path.abspath(p)}:{os.path.abspath(p)}:ro" for p in spec.ro_binds]
    binds += [f"{os.path.abspath(p)}:{os.path.abspath(p)}:rw" for p in spec.rw_binds]
    binds += [
        f"{os.path.abspath(p)}:{os.path.abspath(p)}:ro"
        for p in spec.readonly_paths
        if os.path.exists(p)
    ]
    binds += [f"{os.path.abspath(s)}:{os.path.abspath(d)}:ro" for s, d in spec.overlays]
    bound = [b.split(":")[0] for b in binds]
    size = f"size={spec.tmp_mb}m"
    tmpfs = {"/tmp": f"rw,nosuid,nodev,mode=1777,{size}"}
    if user is not None:
        # podman refuses uid= on a tmpfs: the home is sticky and world-writable, as /tmp is
        tmpfs[SANDBOX_HOME] = f"rw,nosuid,nodev,mode=1777,{size}"
    for p in spec.hidden_paths:
        hidden = os.path.abspath(p)
        if os.path.isdir(hidden) and any(hidden.startswith(b.rstrip("/") + "/") for b in bound):
            tmpfs[hidden] = "ro,nosuid,nodev,noexec,mode=000"
    host: dict[str, Any] = {
        "Binds": binds,
        "Tmpfs": tmpfs,
        "Memory": spec.memory_mb * 1024 * 1024,
        "MemorySwap": spec.memory_mb * 1024 * 1024,
        "PidsLimit": spec.pids_max,
        "CapDrop": ["ALL"],
        "SecurityOpt": ["no-new-privileges"],
        "ReadonlyRootfs": True,
        "NetworkMode": "bridge" if spec.network else "none",
    }
    if spec.cpu_quota is not None:
        host["NanoCpus"] = int(spec.cpu_quota * 1e9)
    labels = {LABEL: spec.agent_id}
    if scope is not None:
        labels[SCOPE_LABEL] = scope
    body: dict[str, Any] = {
        "Image": image,
        "Cmd": list(spec.argv),
        "Env": [f"{k}={v}" for k, v in spec.env.items()]
        + ([f"HOME={SANDBOX_HOME}"] if user is not None and "HOME" not in spec.env else []),
        "WorkingDir": workdir,
        "Labels": labels,
        "NetworkDisabled": not spec.network,
        "AttachStdin": False,
        "OpenStdin": False,
        "Tty": False,
        "HostConfig": host,
    }
    if user is not None:
        body["User"] = f"{user.uid}:{user.gid}"
    return body


class DockerSandbox:
    """Starts each agent in a container ``mosaic-<agent_id>`` labelled with its agent id and
    with ``scope``, the orchestrator instance it belongs to (``reap_orphans`` sees no other)."""

    name = "docker"

    def __init__(
        self,
        *,
        socket: str | None = None,
        image: str | None = None,
        scope: str = "mosaic",
        user: SandboxUser | None = None,
    ) -> None:
        self.client = DockerClient(socket or default_socket())
        self.image = image or DEFAULT_IMAGE
        self.scope = scope
        self.user = user if user is not None else SandboxUser.resolve()

    async def start(self, spec: SandboxSpec) -> DockerProcess:
        await asyncio.to_thread(validate_spec, spec)
        await asyncio.to_thread(spec.log_dir.mkdir, parents=True, exist_ok=True)
        for path in (spec.workdir, *spec.rw_binds):
            await asyncio.to_thread(self.user.grant, path)
        name = f"mosaic-{spec.agent_id}"
        _, data = await self.client.request(
            "POST",
            "/containers/create",
            params={"name": name},
            body=container_config(spec, self.image, self.scope, self.user),
        )
        cid = str(data["Id"])
        try:
            await self.client.request("POST", f"/containers/{cid}/start")
        except SandboxError:
            with contextlib.suppress(SandboxError):
                await self.client.request(
                    "DELETE", f"/containers/{cid}", params={"force": "1"}, ok=(204, 404)
                )
            raise
        logs = asyncio.get_running_loop().create_task(
            self.client.stream_logs(cid, spec.log_dir / "stdout.log", spec.log_dir / "stderr.log")
        )
        log.info(
            "sandbox started",
            extra={"agent_id": spec.agent_id, "container": cid[:12], "backend": "docker"},
        )
        return DockerProcess(spec.agent_id, self.client, cid, logs)

    async def health(self) -> SandboxHealth:
        try:
            await self.client.request("GET", "/_ping", timeout=5)
        except SandboxError as exc:
            return SandboxHealth("docker", ok=False, detail=str(exc))
        try:
            await self.client.request("GET", f"/images/{self.image}/json", timeout=10)
        except SandboxError:
            return SandboxHealth(
                "docker", ok=False, detail=f"image {self.image!r} not found on the engine"
            )
        return SandboxHealth("docker", ok=True, detail=f"{self.client.socket} ({self.image})")

    async def reap_orphans(self, live_agent_ids: set[str]) -> list[str]:
        """Remove this scope's containers whose agent is not live; never another instance's
        (nor an unscoped one: whose it is cannot be told)."""
        filters = json.dumps({"label": [LABEL, f"{SCOPE_LABEL}={self.scope}"]})
        _, items = await self.client.request(
            "GET", "/containers/json", params={"all": "1", "filters": filters}
        )
        reaped = []
        for item in items or []:
            labels = item.get("Labels") or {}
            agent_id = labels.get(LABEL)
            if labels.get(SCOPE_LABEL) != self.scope:  # whatever the engine's filter did
                continue
            if not agent_id or agent_id in live_agent_ids:
                continue
            await self.client.request(
                "DELETE", f"/containers/{item['Id']}", params={"force": "1"}, ok=(204, 404)
            )
            log.info("reaped orphan container", extra={"agent_id": agent_id})
            reaped.append(agent_id)
        return sorted(reaped)
