"""The Mosaic dashboard: one Textual app over any ``EngineAPI`` (in-process or remote).

The app owns the dashboard's state (the agent book, per-agent event history, queue stats) and
one timer: every ``TICK_S`` it drains the buffered events, folds them into the book, and updates
the screen once (coalescing bursts), while engine calls run in workers so a key press is always
answered at once. ``run_local_dashboard`` runs engine, API server and app in one asyncio loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widget import Widget

from core.engine_api import EngineAPI, KillAllResult, QueueStats, SpawnResponse
from core.errors import NotFound, OrchestratorError
from core.models import AgentState, Event
from core.settings import Settings
from mosaic_tui.alerts import KINDS, Alert, Alerts, desktop_escape
from mosaic_tui.book import AgentBook
from mosaic_tui.bridge import EngineThread, ThreadedEngine, faster_thread_switches
from mosaic_tui.feed import EventFeed
from mosaic_tui.format import Clock, short_id
from mosaic_tui.logbridge import LogBridge
from mosaic_tui.screens import (
    ConfirmKill,
    ConfirmKillAll,
    ConfirmQuit,
    DetailScreen,
    DiffScreen,
    HelpScreen,
    SpawnScreen,
)
from mosaic_tui.screens.dashboard import DashboardScreen
from mosaic_tui.screens.help import Section
from mosaic_tui.widgets import AgentsTable, EventsPane, QueuePanel

log = logging.getLogger(__name__)
W = TypeVar("W", bound=Widget)

TICK_S = 0.15
FULL_REFRESH_S = 30.0
"""Every agent is re-read this often (events bring new agents and every lifecycle step at once):
listing 1,000 agents costs the engine tens of milliseconds."""
SHOWN_REFRESH_S = 2.0
"""The agents on screen are re-read this often (their CPU, memory and output change without
events)."""
FETCH_CHUNK = 25
STATS_REFRESH_S = 1.0
MAX_EVENTS_PER_TICK = 2000
PANE_LINES_PER_TICK = 200
HISTORY_PER_AGENT = 500
WHO = "dashboard"


FULL_GC_EVERY = 100
"""Full collections wait for this many collections of the middle generation (Python: 10)."""


def settle_heap() -> None:
    """Once everything is loaded (modules, the engine, the first 1,000 agents), move what lives
    now out of the garbage collector's sight (``gc.freeze``): a full collection then scans only
    what came later, and stops both threads for tens of milliseconds instead of hundreds. Full
    collections also come ten times rarer (``FULL_GC_EVERY``): cyclic garbage is young garbage
    and the younger generations still collect it as often as before."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_GC_EVERY)


def _message(exc: BaseException) -> str:
    return getattr(exc, "message", None) or str(exc) or type(exc).__name__


class MosaicApp(App[None]):
    TITLE = "Mosaic Orchestrator"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+c", "quit_dashboard", "Quit", show=False, priority=True)
    ]

    def __init__(
        self,
        engine: EngineAPI,
        *,
        local: bool,
        api_url: str | None = None,
        clock: Clock | None = None,
        start_after: str | None = "0-0",
        desktop_notify: bool = False,
        settle_heap: bool = False,
    ) -> None:
        super().__init__()
        self.desktop_notify = desktop_notify
        self.alerts = Alerts(since=datetime.now(UTC))
        self.alerted: list[Alert] = []
        self.bells = 0
        self.engine = engine
        self.local = local
        self.api_url = api_url
        self.clock = clock or Clock()
        self.book = AgentBook()
        self.history: dict[str, list[Event]] = {}
        self.feed = EventFeed(engine, start_after=start_after)
        self.stats: QueueStats | None = None
        self.stats_problem = ""
        self.spawn_draft: dict[str, str] = {}
        self.last_kill_all: KillAllResult | None = None
        self.logs = LogBridge()
        self.ticks = 0
        self._dirty = True
        self._to_fetch: set[str] = set()
        self._fetching = False
        self._last_full = 0.0
        self._heap_settled = not settle_heap
        """Whether the heap is settled (or not this app's to settle: ``settle_heap`` is for the
        process's entry points, which own the whole process)."""
        self._last_shown = 0.0
        self._last_stats = 0.0
        self._last_age = 0.0
        self._queue_shown: tuple[object, ...] = ()
        self._full_wanted = True
        self._stats_wanted = True

    # -- start-up ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        mode = "local" if self.local else "attached"
        where = self.api_url or ""
        self.sub_title = f"{mode} · {where}" if where else mode
        self.push_screen(DashboardScreen())
        self.run_worker(self.feed.run(), name="event-feed", group="feed")
        self.set_interval(TICK_S, self.tick)
        self.call_after_refresh(self.tick)

    @property
    def dashboard(self) -> DashboardScreen:
        return next(s for s in self.screen_stack if isinstance(s, DashboardScreen))

    # -- the tick: coalesced screen updates ---------------------------------------------------
    def tick(self) -> None:
        if not any(isinstance(s, DashboardScreen) and s.is_mounted for s in self.screen_stack):
            return  # starting up or shutting down
        self.ticks += 1
        events = self._take_events()
        if events:
            self._fold(events)
        for record in self.logs.drain():
            self.note(record, "red" if record.startswith(("ERROR", "CRITICAL")) else "yellow")
        now = time.monotonic()
        if now - self._last_age >= 1.0:
            self._last_age = now
            self._dirty = True
        if self._dirty:
            self.refresh_table()  # repaints only the rows that changed
        if not self._fetching:
            self._maybe_fetch(now)

    def _take_events(self) -> list[Event]:
        pending = self.feed.pending
        if len(pending) <= MAX_EVENTS_PER_TICK:
            return self.feed.drain()
        return [pending.popleft() for _ in range(MAX_EVENTS_PER_TICK)]

    def _fold(self, events: list[Event]) -> None:
        for event in events:
            if event.agent_id:
                story = self.history.setdefault(event.agent_id, [])
                story.append(event)
                if len(story) > HISTORY_PER_AGENT:
                    del story[: HISTORY_PER_AGENT // 2]
                if self.book.apply_event(event):
                    self._to_fetch.add(event.agent_id)
            alert = self.alerts.check(event)
            if alert is not None:
                self.alert(alert)
            if event.type.value.startswith(("queue.", "task.", "killswitch.")) or (
                event.type.value in ("agent.completed", "agent.failed", "agent.killed")
            ):
                self._stats_wanted = True
        self._dirty = True
        pane = self._find(EventsPane)
        if pane is None:
            return
        if len(events) > PANE_LINES_PER_TICK:
            pane.note(f"… {len(events) - PANE_LINES_PER_TICK} earlier events not shown", "dim")
        pane.add_events(events[-PANE_LINES_PER_TICK:], self.clock)
        if isinstance(self.screen, DetailScreen):
            detail = self.screen
            if any(e.agent_id == detail.agent_id for e in events):
                detail.show()

    def refresh_table(self) -> None:
        self._dirty = False
        table = self._find(AgentsTable)
        if table is None:
            return
        table.sync(self.book, self.clock.now())
        table.set_sort_labels(self.book.sort_column, self.book.descending)
        self.render_queue()

    def render_queue(self) -> None:
        panel = self._find(QueuePanel)
        if panel is not None:
            problem = self.feed.problem or self.stats_problem
            wide = self.dashboard.wide
            counts = self.book.counts()
            shown = (self.stats, tuple(counts.values()), wide, problem)
            if shown != self._queue_shown:  # an update lays the screen out again: only on change
                self._queue_shown = shown
                panel.show(self.stats, counts, wide=wide, problem=problem)

    def _find(self, widget_type: type[W]) -> W | None:
        """A dashboard widget, or None while the screen is not (or no longer) mounted."""
        try:
            return self.dashboard.query_one(widget_type)
        except (NoMatches, StopIteration):
            return None

    # -- reading the engine (in workers) ------------------------------------------------------
    def _maybe_fetch(self, now: float) -> None:
        full = self._full_wanted or now - self._last_full >= FULL_REFRESH_S
        stats = self._stats_wanted or now - self._last_stats >= STATS_REFRESH_S
        ids = self._to_fetch
        if now - self._last_shown >= SHOWN_REFRESH_S:
            self._last_shown = now
            table = self._find(AgentsTable)
            if table is not None:
                ids |= set(table.on_screen_ids())
        if not (full or stats or ids):
            return
        self._to_fetch = set()
        self._full_wanted = self._stats_wanted = False
        if full:
            self._last_full = now
        if stats:
            self._last_stats = now
        self._fetching = True
        self.run_worker(self._fetch(full, stats, set() if full else ids), group="fetch")

    async def _fetch(self, full: bool, stats: bool, ids: set[str]) -> None:
        try:
            if stats:
                await self.refresh_stats()
            if full:
                self.book.replace_all(await self.engine.list_agents())
                if not self._heap_settled:
                    self._heap_settled = True
                    settle_heap()
            elif ids:  # in chunks: the engine's loop serves others in between
                order = sorted(ids)
                for start in range(0, len(order), FETCH_CHUNK):
                    chunk = order[start : start + FETCH_CHUNK]
                    await asyncio.gather(*(self._fetch_one(i) for i in chunk))
            self._dirty = True
        except OrchestratorError as exc:
            self.stats_problem = f"engine: {_message(exc)}"
        except Exception as exc:  # connection lost and the like: shown, retried next tick
            self.stats_problem = f"engine: {_message(exc)}"
            log.debug("dashboard refresh failed: %r", exc)
        finally:
            self._fetching = False

    async def _fetch_one(self, agent_id: str) -> None:
        try:
            self.book.upsert(await self.engine.status(agent_id))
        except NotFound:
            self.book.forget(agent_id)

    async def refresh_stats(self) -> None:
        self.stats = await self.engine.queue_stats()
        self.stats_problem = ""
        self._dirty = True

    # -- operator actions ---------------------------------------------------------------------
    def note(self, message: str, style: str = "yellow") -> None:
        pane = self._find(EventsPane)
        if pane is not None:
            pane.note(message, style)

    def alert(self, alert: Alert) -> None:
        """Tell the operator: a toast, the terminal bell, and a desktop notification if enabled."""
        self.alerted.append(alert)
        del self.alerted[:-100]
        self.notify(
            alert.message, title=alert.title, severity=alert.severity, timeout=8, markup=False
        )
        self.bell()
        if self.desktop_notify:
            self.send_escape(desktop_escape(alert))

    def bell(self) -> None:
        self.bells += 1
        super().bell()

    def send_escape(self, sequence: str) -> None:
        """Write a terminal escape sequence as-is (as ``App.bell`` writes BEL)."""
        driver = self._driver
        if not self.is_headless and driver is not None:
            driver.write(sequence)

    def _fail(self, what: str, exc: BaseException) -> None:
        text = f"{what} failed: {_message(exc)}"
        self.note(text, "bold red")
        self.notify(text, severity="error", markup=False)

    def open_details(self, agent_id: str) -> None:
        self.push_screen(DetailScreen(agent_id))

    def open_spawn_form(self) -> None:
        self.push_screen(SpawnScreen(self.engine, self.spawn_draft), self._spawned)

    def _spawned(self, response: SpawnResponse | None) -> None:
        if response is None:
            return
        verb = "Already running" if response.existing else "Spawned"
        self.notify(f"{verb}: agent {short_id(response.agent_id)}", markup=False)
        self._to_fetch.add(response.agent_id)
        self._select_when_shown(response.agent_id)

    def _select_when_shown(self, agent_id: str, tries: int = 20) -> None:
        table = self._find(AgentsTable)
        if table is None:
            return
        if agent_id in table.shown_ids:
            table.select(agent_id)
        elif tries:
            self.set_timer(TICK_S, lambda: self._select_when_shown(agent_id, tries - 1))

    def confirm_kill(self, agent_id: str) -> None:
        agent = self.book.agents.get(agent_id)
        if agent is None:
            self.notify("That agent is not known (yet).", severity="warning")
            return
        if agent.status.final:
            self.notify(
                f"Agent {short_id(agent_id)} already ended ({agent.status.value}).",
                severity="warning",
                markup=False,
            )
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.alerts.own_kill(agent.agent_id)
                self.run_worker(self._kill(agent), group="kill")
            else:
                self.notify("Kill cancelled.", timeout=2)

        self.push_screen(ConfirmKill(agent), answered)

    async def _kill(self, agent: AgentState) -> None:
        label = f"agent {short_id(agent.agent_id)} ({agent.task_id})"
        self.note(f"killing {label}…", "magenta")
        try:
            state = await self.engine.kill(agent.agent_id, who=WHO)
        except Exception as exc:
            self._fail(f"Kill of {label}", exc)
            return
        self.book.upsert(state)
        self._dirty = True
        self.notify(f"Killed {label}: {state.status.value}", markup=False)

    def confirm_kill_all(self) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                live = [a.agent_id for a in self.book.agents.values() if not a.status.final]
                self.alerts.own_kill(*live)
                self.run_worker(self._kill_all(), group="kill")
            else:
                self.notify("Kill all cancelled.", timeout=2)

        self.push_screen(ConfirmKillAll(self.book.live_count()), answered)

    async def _kill_all(self) -> None:
        self.note("KILL ALL requested…", "bold magenta")
        try:
            result = await self.engine.kill_all(who=WHO)
        except Exception as exc:
            self._fail("Kill all", exc)
            return
        self.last_kill_all = result
        self.note(result.message, "bold magenta")
        for error in result.errors:
            self.note(f"  {error.get('agentId', '?')}: {error.get('error', '')}", "red")
        self.notify(
            result.message, severity="error" if result.failed else "information", markup=False
        )
        self._full_wanted = self._stats_wanted = True

    def toggle_pause(self) -> None:
        self.run_worker(self._toggle_pause(), group="pause", exclusive=True)

    async def _toggle_pause(self) -> None:
        try:
            if self.stats is None:
                await self.refresh_stats()
            assert self.stats is not None
            if self.stats.paused:
                await self.engine.resume()
                self.notify("Queue resumed.", timeout=2)
            else:
                await self.engine.pause()
                self.notify("Queue paused: running agents go on, no new ones start.", timeout=3)
            await self.refresh_stats()
        except Exception as exc:
            self._fail("Pause/resume", exc)
        self.render_queue()

    # -- help, palette, quit ------------------------------------------------------------------
    def help_sections(self) -> list[Section]:
        def keys(bindings: Iterable[Any]) -> list[tuple[str, str]]:
            rows: dict[str, list[str]] = {}
            for binding in bindings:
                b = binding if isinstance(binding, Binding) else Binding(*binding)
                rows.setdefault(b.description or b.action, []).append(self.get_key_display(b))
            return [(" / ".join(k), desc) for desc, k in rows.items()]

        agents = keys(DashboardScreen.BINDINGS)
        agents.insert(0, ("↑ / ↓", "Select an agent"))
        return [
            ("Agents (main screen)", agents),
            ("Agent details", keys(DetailScreen.BINDINGS)),
            ("Diff view", [*keys(DiffScreen.BINDINGS), ("↑ ↓ ← →", "Scroll")]),
            ("Spawn form", [*keys(SpawnScreen.BINDINGS), ("tab", "Next field")]),
            (
                "Confirmations",
                [
                    ("y / n / esc", "Kill one agent: yes / no / cancel"),
                    ("KILL + enter", "Kill all: type the word, Esc cancels"),
                ],
            ),
            ("Anywhere", [("ctrl+p", "Command palette"), ("ctrl+c", "Quit")]),
            (
                "Alerts: a toast and the terminal bell when",
                [
                    *KINDS,
                    (
                        "desktop",
                        "also a desktop notification (OSC 777/9): "
                        + ("on" if self.desktop_notify else "off; --desktop-notify turns it on"),
                    ),
                ],
            ),
        ]

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield SystemCommand("Kill selected agent", "Stop the highlighted agent", self._palette_kill)
        yield SystemCommand(
            "Kill ALL agents", "Killswitch: stop every live agent", self.confirm_kill_all
        )
        yield SystemCommand("Spawn agent", "Open the spawn form", self.open_spawn_form)
        yield SystemCommand("Pause / resume queue", "Toggle queue processing", self.toggle_pause)
        yield SystemCommand("Help", "List every key", self.action_help)
        quit_help = "Stop the orchestrator and quit" if self.local else "Detach"
        yield SystemCommand("Quit", quit_help, self.action_quit_dashboard)
        yield from super().get_system_commands(screen)

    def _palette_kill(self) -> None:
        table = self._find(AgentsTable)
        agent_id = table.selected_agent_id if table is not None else None
        if isinstance(self.screen, DetailScreen):
            agent_id = self.screen.agent_id
        if agent_id is None:
            self.notify("No agent selected.", severity="warning")
        else:
            self.confirm_kill(agent_id)

    def action_quit_dashboard(self) -> None:
        live = self.book.live_count()
        if not self.local or live == 0:
            self.exit()
            return
        if isinstance(self.screen, ConfirmQuit):
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.exit()

        self.push_screen(ConfirmQuit(live), answered)


async def run_local_dashboard(
    settings: Settings, *, desktop_notify: bool = False, shared_loop: bool = False
) -> None:
    """Engine, API server and dashboard in one process; quitting stops all three.

    The engine and the API run on their own event loop in their own thread (``EngineThread``);
    the dashboard reaches them through ``ThreadedEngine``, so drawing never stalls the engine.
    ``shared_loop`` runs all three on one loop instead (the design before; for comparison).
    """
    from core.api.service import running_service

    log_file = Path(settings.mosaic_state_dir) / "logs" / "dashboard.log"
    if shared_loop:
        async with running_service(settings) as (engine, runner):
            host, port = runner.addresses[0][:2]
            app = MosaicApp(
                engine,
                local=True,
                api_url=f"API http://{host}:{port}",
                desktop_notify=desktop_notify,
                settle_heap=True,
            )
            with app.logs.capture(log_file):
                await app.run_async()
            _say_stopping(len(engine.spawner.live))
        return
    restore = faster_thread_switches()
    thread = EngineThread(lambda: running_service(settings), "mosaic-engine")
    try:
        engine, runner = await asyncio.to_thread(thread.start)
        assert thread.loop is not None
        host, port = runner.addresses[0][:2]
        app = MosaicApp(
            ThreadedEngine(engine, thread.loop),
            local=True,
            api_url=f"API http://{host}:{port}",
            desktop_notify=desktop_notify,
            settle_heap=True,
        )
        with app.logs.capture(log_file):
            await app.run_async()
        _say_stopping(len(engine.spawner.live))
    finally:
        await asyncio.to_thread(thread.stop)  # the engine's shutdown, on the engine's loop
        restore()


def _say_stopping(live: int) -> None:
    if live:
        print(f"mosaic-orchestrator: stopping, killing {live} live agent(s)", flush=True)
