"""The transcript an agent leaves in its I/O directory is copied into its logs safely: a planted
symbolic link is not followed, and only the transcript's tail (``AGENT_LOG_MB``) is kept."""

from __future__ import annotations

import contextlib
import json
import uuid
from pathlib import Path

from core.agents import ModelGateway
from core.models import AgentState, AgentType, GateProfile, SpawnContext, SpawnRequest
from core.run import SandboxPolicy
from core.run.runtimes import BuiltinLaunch, BuiltinRuntime
from core.safeio import MiB
from core.settings import load_settings
from sandbox import SandboxSpec


async def test_symlinked_transcript_is_not_copied_into_the_logs(
    tmp_path: Path, gateway: ModelGateway
) -> None:
    host_secret = tmp_path / "host-only.txt"
    host_secret.write_text("HOST-ONLY-SECRET: never in an agent's logs\n")
    settings = load_settings(mosaic_state_dir=tmp_path / "state", agent_log_mb=1)
    launcher = BuiltinRuntime(settings, gateway)
    agent = AgentState(
        agent_id=f"agent-{uuid.uuid4().hex[:8]}",
        task_id="T-link",
        agent_type=AgentType.WORKER,
        gate_profile=GateProfile.MINIMAL,
    )
    request = SpawnRequest(
        task_id="T-link",
        agent_type=AgentType.WORKER,
        context=SpawnContext(repository="/srv/repo.git"),
    )
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    logs = tmp_path / "logs"
    policy = SandboxPolicy.from_settings(settings, readonly=[], hidden=[])
    async with contextlib.AsyncExitStack() as stack:
        launch = await launcher.prepare(
            agent, request, worktree=worktree, agent_dir=logs, policy=policy, stack=stack
        )
        assert isinstance(launch, BuiltinLaunch)
        # what a hostile agent does in its own I/O directory, which it may write
        (launch.io_dir / "transcript.jsonl").symlink_to(host_secret)
        await launch.collect()
    # the stack ran collect again on its way out (as when an agent is killed)
    copied = logs / "transcript.jsonl"
    assert not copied.exists() or "HOST-ONLY-SECRET" not in copied.read_text()
    assert not any("HOST-ONLY-SECRET" in p.read_text() for p in logs.rglob("*") if p.is_file())
    assert host_secret.read_text().startswith("HOST-ONLY-SECRET")


async def test_transcript_over_the_cap_keeps_its_last_whole_records(tmp_path: Path) -> None:
    io_dir = tmp_path / "io"
    io_dir.mkdir()
    records = [{"type": "turn", "n": i, "text": "y" * 100} for i in range(30_000)]  # ~3.5 MiB
    (io_dir / "transcript.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    spec = SandboxSpec(
        agent_id="a-1", argv=["true"], workdir=tmp_path, env={}, log_dir=tmp_path / "logs"
    )
    await BuiltinLaunch(spec, io_dir, transcript_max_bytes=MiB).collect()
    copied = (tmp_path / "logs" / "transcript.jsonl").read_bytes()
    assert len(copied) <= MiB
    kept = [json.loads(line) for line in copied.decode().splitlines()]  # every line whole
    assert kept[-1] == records[-1] and kept[0]["n"] > 0
    assert [r["n"] for r in kept] == list(range(kept[0]["n"], 30_000))
