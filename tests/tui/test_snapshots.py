"""Screenshots of the main screens (pytest-textual-snapshot's SVG extension), deterministic.

The state is fixed (task ids, a paused queue, one agent killed while queued), the clock is
frozen, and the agent ids are made deterministic (``00000001-...``). Update with
``pytest tests/tui --snapshot-update``; the accepted SVGs are copied to ``docs/screenshots/`` for
the README.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from pytest_textual_snapshot import SVGImageExtension
from syrupy import SnapshotAssertion
from textual.pilot import Pilot
from textual.widgets import Input

from core.engine import Engine
from mosaic_tui.app import MosaicApp
from mosaic_tui.format import FrozenClock
from mosaic_tui.screens import ConfirmKillAll, HelpScreen, SpawnScreen
from tests.tui.conftest import request, until
from tests.tui.helpers import rows

TASKS = (("T-101", "worker"), ("T-102", "reviewer"), ("T-103", "tester"), ("T-104", "worker"))


async def _arrange(engine: Engine, origin: Path) -> list[str]:
    await engine.pause()
    ids = []
    for task, kind in TASKS:
        ids.append((await engine.spawn(request(task, origin, agentType=kind))).agent_id)
    await engine.kill(ids[-1], who="operator")
    return ids


async def _settled(app: MosaicApp, pilot: Pilot[None]) -> None:
    await until(lambda: len(rows(app)) == len(TASKS), what="rows")
    await until(lambda: app.feed.received >= 10, what="events replayed")
    await until(lambda: rows(app)[0][-1] == "killed by operator", what="activity")
    await until(lambda: app.stats is not None and app.stats.paused, what="stats")
    await pilot.pause(0.3)
    await until(lambda: not app._fetching and not app._to_fetch, what="quiet")
    await pilot.pause()


def _shot(app: MosaicApp, ids: list[str]) -> str:
    for screen_input in app.screen.query(Input):
        screen_input.cursor_blink = False
    return app.export_screenshot(title="Mosaic Orchestrator")


@pytest.fixture(autouse=True)
def _numbered_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agent ids 00000001-0000-4000-8000-000000000000, ...: the same on every run."""
    numbers = itertools.count(1)
    monkeypatch.setattr(
        "core.engine.new_agent_id", lambda: f"{next(numbers):08d}-0000-4000-8000-000000000000"
    )


async def test_screens(engine: Engine, origin: Path, snapshot: SnapshotAssertion) -> None:
    snap = snapshot.use_extension(SVGImageExtension)
    ids = await _arrange(engine, origin)
    for width, height in ((80, 24), (160, 48)):
        app = MosaicApp(engine, local=True, clock=FrozenClock())
        async with app.run_test(size=(width, height)) as pilot:
            await _settled(app, pilot)
            app.book.sort_column, app.book.descending = "task", False
            app.refresh_table()
            await pilot.pause()
            assert snap(name=f"dashboard-{width}x{height}") == _shot(app, ids)
            if width == 160:
                await pilot.press("question_mark")  # the whole help: keys and alerts
                assert isinstance(app.screen, HelpScreen)
                await pilot.pause()
                assert snap(name="help-160x48") == _shot(app, ids)
                await pilot.press("K")
                assert isinstance(app.screen, HelpScreen)  # K means nothing here
                await pilot.press("escape", "K")
                assert isinstance(app.screen, ConfirmKillAll)
                await pilot.pause()
                assert snap(name="kill-all-160x48") == _shot(app, ids)
            if width == 80:
                await pilot.press("question_mark")
                assert isinstance(app.screen, HelpScreen)
                await pilot.pause()
                assert snap(name="help-80x24") == _shot(app, ids)
                await pilot.press("escape", "K")
                assert isinstance(app.screen, ConfirmKillAll)
                await pilot.pause()
                assert snap(name="kill-all-80x24") == _shot(app, ids)
                await pilot.press("escape", "n", *"T-200")
                assert isinstance(app.screen, SpawnScreen)
                await pilot.press("ctrl+s")
                await pilot.pause()
                assert snap(name="spawn-form-80x24") == _shot(app, ids)
