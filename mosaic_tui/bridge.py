"""The engine on its own event loop, in its own thread, and the dashboard's way to reach it.

Rendering a screen is CPU work on the event loop it runs on. With the engine on that same loop,
every frame the dashboard draws is time the engine (queue, monitors, API, SSE) waits. So the
local dashboard runs the engine and the API server in a thread of the same process, on a loop
of their own, and talks to it through ``ThreadedEngine``: each call is scheduled on the engine's
loop (``run_coroutine_threadsafe``) and awaited on the dashboard's; events are pumped on the
engine's loop into a queue on the dashboard's (``call_soon_threadsafe``). Python's GIL still
interleaves the two threads, so the process also switches threads more often
(``SWITCH_INTERVAL_S``): a long render then delays the engine by about a millisecond, not five.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

from core.engine_api import EngineAPI, KillAllResult, QueueStats, SpawnResponse
from core.models import AgentState, AgentStatus, Event, SpawnRequest

T = TypeVar("T")

SWITCH_INTERVAL_S = 0.001


class EngineThread(Generic[T]):
    """Enters an async context (the engine, the API server...) on a loop in a new thread.

    ``start`` returns what the context yields once it is entered (or raises what entering it
    raised); ``stop`` leaves it (on that loop, so shutdown runs where start-up ran) and joins.
    """

    def __init__(self, context: Callable[[], AbstractAsyncContextManager[T]], name: str) -> None:
        self._context = context
        self._name = name
        self._ready = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def start(self, timeout: float | None = None) -> T:
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        self._ready.wait(timeout)
        if self._error is not None:
            self._thread.join()
            raise self._error
        assert self._value is not None, "the engine thread did not start"
        return self._value

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to start(), or lost at shutdown: logged there
            if not self._ready.is_set():
                self._error = exc
        finally:
            self._ready.set()

    async def _run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self._context() as value:
            self._value = value
            self._ready.set()
            await self._stop.wait()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the engine's loop and wait for it (from another thread, not a loop)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self, timeout: float | None = None) -> None:
        if self.loop is not None and self._stop is not None and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended already
                self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout)


_END = object()


class ThreadedEngine:
    """``EngineAPI`` for a caller on one loop over an engine running on another loop."""

    def __init__(self, engine: EngineAPI, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop

    async def _on_engine(self, coro: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise

    async def spawn(self, request: SpawnRequest) -> SpawnResponse:
        return await self._on_engine(self.engine.spawn(request))

    async def status(self, agent_id: str) -> AgentState:
        return await self._on_engine(self.engine.status(agent_id))

    async def list_agents(self, status: AgentStatus | None = None) -> list[AgentState]:
        return await self._on_engine(self.engine.list_agents(status))

    async def kill(self, agent_id: str, *, who: str = "api") -> AgentState:
        return await self._on_engine(self.engine.kill(agent_id, who=who))

    async def kill_all(self, *, who: str = "api") -> KillAllResult:
        return await self._on_engine(self.engine.kill_all(who=who))

    async def pause(self) -> None:
        await self._on_engine(self.engine.pause())

    async def resume(self) -> None:
        await self._on_engine(self.engine.resume())

    async def queue_stats(self) -> QueueStats:
        return await self._on_engine(self.engine.queue_stats())

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        return await self._on_engine(self.engine.ready())

    async def diff(self, agent_id: str) -> str:
        return await self._on_engine(self.engine.diff(agent_id))

    async def events(self, last_event_id: str | None = None) -> AsyncIterator[Event]:
        """The engine's events, read on its loop and handed over to the caller's loop."""
        here = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def hand(item: Any) -> None:
            here.call_soon_threadsafe(queue.put_nowait, item)

        async def pump() -> None:
            try:
                async for event in self.engine.events(last_event_id):
                    hand(event)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                hand(exc)
                return
            hand(_END)

        future = asyncio.run_coroutine_threadsafe(pump(), self.loop)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            future.cancel()


def faster_thread_switches() -> Callable[[], None]:
    """Switch threads every ``SWITCH_INTERVAL_S``; answers how to restore the old interval."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return lambda: sys.setswitchinterval(old)
