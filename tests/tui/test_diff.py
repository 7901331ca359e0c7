"""The diff view: from an agent's details, ``d`` shows its change as a coloured unified diff,
in-process and attached (``GET /agents/{id}/diff``); an agent with no change says so."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pytest_textual_snapshot import SVGImageExtension
from syrupy import SnapshotAssertion

from core.models import AgentStatus
from mosaic_tui.app import MosaicApp
from mosaic_tui.format import FrozenClock
from mosaic_tui.remote import RemoteEngine
from mosaic_tui.screens import DetailScreen, DiffScreen
from mosaic_tui.screens.diff import DiffView, diff_stats, line_style
from tests.spine.conftest import OrchestratorFactory
from tests.tui.conftest import request, until, wait_status
from tests.tui.helpers import static_text, status_of

EDITING_AGENT = (
    "printf '# sample\\nmore words\\n' > README.md; "
    "printf 'def main():\\n    return 42\\n' > app.py; echo edited; sleep 30"
)


@pytest.fixture(autouse=True)
def _numbered_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    numbers = itertools.count(1)
    monkeypatch.setattr(
        "core.engine.new_agent_id", lambda: f"{next(numbers):08d}-0000-4000-8000-000000000000"
    )


def test_diff_lines_are_coloured_by_their_syntax() -> None:
    assert line_style("diff --git a/x b/x") == "bold"
    assert line_style("@@ -1 +1,2 @@") == "cyan"
    assert line_style("+added") == "green" and line_style("-removed") == "red"
    assert line_style("+++ b/x") == "bold" and line_style("--- a/x") == "bold"
    assert line_style(" context") == ""
    text = "diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1 +1,2 @@\n-a\n+b\n+c\n"
    assert diff_stats(text) == (1, 2, 1)


async def _open_diff(app: MosaicApp, pilot: object, task: str) -> DiffScreen:
    from textual.pilot import Pilot

    assert isinstance(pilot, Pilot)
    await until(lambda: status_of(app, task) is not None, what="row")
    agent_id = next(a.agent_id for a in app.book.agents.values() if a.task_id == task)
    app.dashboard.table.select(agent_id)
    await pilot.press("enter")
    assert isinstance(app.screen, DetailScreen)
    await pilot.press("d")
    assert isinstance(app.screen, DiffScreen)
    return app.screen


def _title(screen: DiffScreen) -> str:
    from textual.widgets import Static

    return static_text(screen.query_one("#diff-title", Static))


async def test_diff_view_shows_a_live_agents_change(
    orchestrator_factory: OrchestratorFactory, origin: Path, snapshot: SnapshotAssertion
) -> None:
    snap = snapshot.use_extension(SVGImageExtension)
    async with orchestrator_factory(mosaic_agent_command=EDITING_AGENT) as orch:
        agent_id = (await orch.engine.spawn(request("T-edit", origin))).agent_id
        await wait_status(orch.engine, agent_id, AgentStatus.RUNNING)
        await until(lambda: _diff_has(orch.engine, agent_id, "+more words"), what="change")
        for width, height in ((80, 24), (160, 48)):
            app = MosaicApp(orch.engine, local=True, clock=FrozenClock())
            async with app.run_test(size=(width, height)) as pilot:
                screen = await _open_diff(app, pilot, "T-edit")
                await until(lambda s=screen: "2 files, " in _title(s), what="diff loaded")
                assert "2 files, +3 −0" in _title(screen), _title(screen)
                lines = screen.query_one(DiffView).lines
                assert "+more words" in lines and "+    return 42" in lines
                assert any(line.startswith("@@") for line in lines)
                await pilot.press("end")  # scrolls
                await pilot.press("home")
                await pilot.pause()
                assert snap(name=f"diff-{width}x{height}") == app.export_screenshot(
                    title="Mosaic Orchestrator"
                )
                await pilot.press("escape")
                assert isinstance(app.screen, DetailScreen)


async def _diff_has(engine: object, agent_id: str, text: str) -> bool:
    try:
        return text in await engine.diff(agent_id)  # type: ignore[attr-defined]
    except Exception:
        return False


async def test_attached_diff_and_an_agent_without_one(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command=EDITING_AGENT) as orch:
        await orch.engine.pause()
        queued = (await orch.engine.spawn(request("T-queued", origin))).agent_id
        async with RemoteEngine(orch.url) as remote:
            app = MosaicApp(remote, local=False, api_url=orch.url)
            async with app.run_test(size=(120, 30)) as pilot:
                screen = await _open_diff(app, pilot, "T-queued")
                await until(lambda: "No diff for agent" in _title(screen), what="no diff")
                assert screen.query_one(DiffView).lines == []
                await pilot.press("escape", "escape")
                await orch.engine.resume()
                await wait_status(orch.engine, queued, AgentStatus.RUNNING)
                await until(lambda: _diff_has(remote, queued, "+more words"), what="change made")
                screen = await _open_diff(app, pilot, "T-queued")
                await until(lambda: "2 files" in _title(screen), what="attached diff")
                assert "+more words" in screen.query_one(DiffView).lines
