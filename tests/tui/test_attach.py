"""Attach mode: the dashboard drives a headless orchestrator over REST/SSE."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.api.auth import key_id
from core.errors import Conflict, NotFound, NotReady, ValidationFailed
from core.models import AgentStatus
from mosaic_tui.app import MosaicApp
from mosaic_tui.remote import RemoteEngine, Unauthorized
from mosaic_tui.screens import ConfirmKill
from tests.spine.conftest import OrchestratorFactory
from tests.tui.conftest import LONG_AGENT, request, until, wait_status
from tests.tui.helpers import events_text, queue_text, status_of


async def test_attached_dashboard_kills_on_the_server_and_detaching_keeps_agents(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(
        mosaic_agent_command=LONG_AGENT, orchestrator_api_key="s3cret"
    ) as orch:
        doomed = (await orch.engine.spawn(request("T-doomed", origin))).agent_id
        kept = (await orch.engine.spawn(request("T-kept", origin))).agent_id
        await wait_status(orch.engine, doomed, AgentStatus.RUNNING)
        await wait_status(orch.engine, kept, AgentStatus.RUNNING)
        async with RemoteEngine(orch.url, token="s3cret") as remote:
            app = MosaicApp(remote, local=False, api_url=orch.url)
            async with app.run_test(size=(120, 30)) as pilot:
                await until(lambda: status_of(app, "T-kept") == "▶ running", what="rows")
                await until(lambda: "agent.running" in events_text(app), what="SSE replay")
                await until(lambda: "live 2/2" in queue_text(app), what="queue stats")
                app.dashboard.table.select(doomed)
                await pilot.press("k")
                assert isinstance(app.screen, ConfirmKill)
                await pilot.press("y")
                await until(lambda: status_of(app, "T-doomed") == "■ killed", what="killed row")
                await until(lambda: "agent.killed" in events_text(app), what="killed event")
                await pilot.press("q")  # detaches at once: no question, agents stay
                await until(lambda: not app.is_running, what="detached")
        state = await wait_status(orch.engine, doomed, AgentStatus.KILLED)
        # the server names who was authenticated, not what the client says it is
        assert state.error == f"killed by bearer:{key_id('s3cret')}@127.0.0.1"
        await until(lambda: doomed not in orch.engine.spawner.live, what="reaped")
        assert (await orch.engine.status(kept)).status is AgentStatus.RUNNING
        assert kept in orch.engine.spawner.live


async def test_remote_engine_speaks_the_api_and_its_errors(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(
        mosaic_agent_command=LONG_AGENT, orchestrator_api_key="s3cret"
    ) as orch:
        async with RemoteEngine(orch.url, token="s3cret") as remote:
            await remote.pause()
            assert (await remote.queue_stats()).paused
            spawned = await remote.spawn(request("T-r", origin, priority=2))
            again = await remote.spawn(request("T-r", origin, priority=2))
            assert again.existing and again.agent_id == spawned.agent_id
            with pytest.raises(Conflict, match="different request"):
                await remote.spawn(request("T-r", origin, priority=9))
            with pytest.raises(NotFound):
                await remote.status("no-such-agent")
            with pytest.raises(ValidationFailed):
                await remote.spawn(request("T-bad", origin.parent / "absent"))
            state = await remote.status(spawned.agent_id)
            assert (state.task_id, state.status) == ("T-r", AgentStatus.SPAWNING)
            assert [a.agent_id for a in await remote.list_agents(AgentStatus.SPAWNING)] == [
                spawned.agent_id
            ]
            assert await remote.list_agents(AgentStatus.RUNNING) == []
            ok, checks = await remote.ready()
            assert ok and checks["valkey"]["ok"]
            events = remote.events("0-0")
            first = await anext(events)
            assert first.id and first.type.value == "queue.paused"
            await events.aclose()
            result = await remote.kill_all()
            assert result.message == "Kill all completed: 1 killed, 0 failed"
            assert (await remote.kill(spawned.agent_id)).status is AgentStatus.KILLED
            await remote.resume()
            assert not (await remote.queue_stats()).paused
        async with RemoteEngine(orch.url, token="wrong") as intruder:
            with pytest.raises(Unauthorized):
                await intruder.queue_stats()
            ok, checks = await intruder.ready()
            assert not ok and checks["server"]["error"]
    async with RemoteEngine(orch.url) as gone:
        with pytest.raises(NotReady, match="cannot reach the orchestrator"):
            await gone.queue_stats()
