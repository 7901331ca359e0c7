"""Alerts: a toast and the bell when an agent fails, is stuck, is killed by someone else, or the
model is rate-limited; never for this dashboard's own kills or for events from before it started."""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path

from core.agents.ratelimit import rate_limited_event
from core.models import AgentStatus, Event, EventType
from mosaic_tui.alerts import Alert, Alerts, desktop_escape
from mosaic_tui.app import MosaicApp
from mosaic_tui.screens import ConfirmKill, HelpScreen
from tests.spine.conftest import OrchestratorFactory
from tests.tui.conftest import LONG_AGENT, request, until, wait_status
from tests.tui.helpers import static_text, status_of


def kinds(app: MosaicApp) -> list[str]:
    return [alert.kind for alert in app.alerted]


def screen_text(app: MosaicApp) -> str:
    return html.unescape(app.export_screenshot()).replace("\xa0", " ")


class EscapeApp(MosaicApp):
    """Records the escape sequences it would write to the terminal."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.escapes: list[str] = []

    def send_escape(self, sequence: str) -> None:
        self.escapes.append(sequence)


def test_which_events_alert() -> None:
    now = datetime.now(UTC)
    alerts = Alerts(since=now)

    def event(kind: EventType, **data: object) -> Event:
        return Event(type=kind, agentId="abcdef12-x", taskId="T-1", timestamp=now, data=data)

    failed = alerts.check(event(EventType.AGENT_FAILED, error="gates: lint failed"))
    assert failed is not None and failed.kind == "failed" and failed.severity == "error"
    assert failed.title == "Agent abcdef12 (T-1) failed" and failed.message == "gates: lint failed"
    stuck = alerts.check(event(EventType.AGENT_FAILED, error="stuck: no output and no CPU for 9s"))
    assert stuck is not None and stuck.kind == "stuck"
    killed = alerts.check(event(EventType.AGENT_KILLED, by="ops"))
    assert killed is not None and killed.message == "killed by ops"
    alerts.own_kill("abcdef12-x")
    assert alerts.check(event(EventType.AGENT_KILLED, by="dashboard")) is None
    assert alerts.check(event(EventType.GATE_FAILED, gate="lint")) is None
    old = Event(type=EventType.AGENT_FAILED, agentId="a", timestamp=now - timedelta(seconds=1))
    assert alerts.check(old) is None  # replayed history
    limited = alerts.check(rate_limited_event(now + timedelta(seconds=30), 30.0, 429))
    assert limited is not None and limited.message == "rate-limited, every agent waits 30s"
    escape = desktop_escape(Alert("failed", "a", "Agent a; x", "boom\x1b[31m", "error"))
    assert escape == "\x1b]777;notify;Agent a, x;boom[31m\x07\x1b]9;Agent a, x: boom[31m\x07"


async def test_failure_stuck_and_foreign_kill_alert_but_own_kill_does_not(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command=LONG_AGENT) as orch:
        old = (await orch.engine.spawn(request("T-old", origin))).agent_id
        await wait_status(orch.engine, old, AgentStatus.RUNNING)
        await orch.engine.kill(old, who="ops")  # before the dashboard: history, no alert
        mine = (await orch.engine.spawn(request("T-mine", origin))).agent_id
        theirs = (await orch.engine.spawn(request("T-theirs", origin))).agent_id
        for agent_id in (mine, theirs):
            await wait_status(orch.engine, agent_id, AgentStatus.RUNNING)
        app = EscapeApp(orch.engine, local=True, desktop_notify=True)
        async with app.run_test(size=(120, 30), notifications=True) as pilot:
            await until(lambda: status_of(app, "T-theirs") == "▶ running", what="rows")
            await until(lambda: status_of(app, "T-old") == "■ killed", what="history")
            assert app.alerted == [] and app.bells == 0

            app.dashboard.table.select(mine)
            await pilot.press("k")
            assert isinstance(app.screen, ConfirmKill)
            await pilot.press("y")
            await until(lambda: status_of(app, "T-mine") == "■ killed", what="own kill")
            await pilot.pause(0.5)
            assert app.alerted == [] and app.bells == 0  # asked for here: no alert

            await orch.engine.kill(theirs, who="ops")
            await until(lambda: kinds(app) == ["killed"], what="foreign kill alert")
            assert app.bells == 1
            await until(lambda: "was killed" in screen_text(app), what="toast")
            assert "killed by ops" in screen_text(app)
            assert len(app.escapes) == 1 and "killed by ops" in app.escapes[0]

            await orch.engine.store.emit(
                rate_limited_event(datetime.now(UTC) + timedelta(seconds=20), 20.0, 429)
            )
            await until(lambda: "rate-limited" in kinds(app), what="rate limit")
            assert kinds(app) == ["killed", "rate-limited"], app.alerted
            assert app.bells == 2

            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            help_text = static_text(app.screen.query_one("#help-keys"))  # type: ignore[arg-type]
            for words in ("failed", "stuck", "killed by someone else", "rate-limited", "OSC"):
                assert words in help_text


async def test_a_failed_and_a_stuck_agent_alert(
    orchestrator_factory: OrchestratorFactory, origin: Path
) -> None:
    async with orchestrator_factory(mosaic_agent_command="echo trying; exit 3") as orch:
        app = MosaicApp(orch.engine, local=True)
        async with app.run_test(size=(120, 30), notifications=True) as pilot:
            failing = (await orch.engine.spawn(request("T-fail", origin))).agent_id
            await until(lambda: "failed" in kinds(app), what="failure alert")
            alert = next(a for a in app.alerted if a.kind == "failed")
            assert alert.agent_id == failing and alert.title.endswith("(T-fail) failed")
            assert app.bells >= 1
            await until(lambda: "(T-fail) failed" in screen_text(app), what="toast")

            # the monitor ends an agent with no output and no CPU for AGENT_STUCK_S as failed,
            # its error worded "stuck: ..." (core/run/monitor.py): the same event, here
            # raised through the lifecycle, as the monitor's run would
            await orch.engine.pause()
            held = (await orch.engine.spawn(request("T-stuck", origin))).agent_id
            await orch.engine.lifecycle.transition(
                held, AgentStatus.FAILED, error="stuck: no output and no CPU activity for 901s"
            )
            await until(lambda: "stuck" in kinds(app), what="stuck alert")
            await until(lambda: "(T-stuck) is stuck" in screen_text(app), what="toast")
            await pilot.pause()
