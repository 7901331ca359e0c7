"""State in Valkey: agents, tasks, the event stream, the audit log.

Keys (SPEC §5)::

    orchestrator:task:{taskId}    TaskState JSON
    orchestrator:agent:{agentId}  AgentState JSON (``version`` guards every write)
    orchestrator:events           pub/sub channel (one JSON event per message)
    orchestrator:events:log       bounded stream of the same events (SSE replay)
    orchestrator:agents           sorted set of agent ids by spawn time (listing)
    orchestrator:audit            bounded stream of killswitch audit records

Every agent write is a compare-and-set on ``version`` in one Lua call that also writes the task
and appends + publishes the event, so state and event never disagree.

Valkey outages (SPEC §19): a store is *fast* (an operation on an unreachable Valkey raises at
once: the API answers 503) or *durable* (:meth:`StateStore.durable_twin`: the run pipeline's,
whose writes must not be lost). A durable store retries an operation that met an unreachable
server with backoff until Valkey answers again, waking as soon as the watch
(:class:`Availability`) sees it back; a running agent's state write waits instead of failing it.
The memory this takes is one pending operation per waiting caller. On shutdown
(:meth:`StateStore.stop_waiting`) the waits end after a grace and the error is raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import redis.asyncio as aioredis
import redis.exceptions

from core.errors import Conflict, NotFound, StoreUnavailable
from core.models import AgentState, Event, TaskState

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "orchestrator"
CHANNEL = f"{PREFIX}:events"
STREAM = f"{PREFIX}:events:log"
INDEX = f"{PREFIX}:agents"
AUDIT = f"{PREFIX}:audit"


def agent_key(agent_id: str) -> str:
    return f"{PREFIX}:agent:{agent_id}"


def task_key(task_id: str) -> str:
    return f"{PREFIX}:task:{task_id}"


# KEYS: agent, task, stream, index
# ARGV: expected version ("" = the agent must not exist), agent json, task json ("" = keep),
#       event payload ("" = none), channel, stream maxlen, index score ("" = keep),
#       task guard ("1" = refuse when the task has a live agent), ttl seconds ("" = none)
_COMMIT = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if cur then return {'conflict', cur} end
else
  if not cur then return {'missing', ''} end
  local v = cjson.decode(cur)['version']
  if tostring(v) ~= ARGV[1] then return {'conflict', cur} end
end
if ARGV[8] == '1' then
  local t = redis.call('GET', KEYS[2])
  if t then
    local st = cjson.decode(t)['status']
    if st == 'spawning' or st == 'running' then return {'exists', t} end
  end
end
redis.call('SET', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3]) end
if ARGV[9] ~= '' then
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[9]))
  if ARGV[3] ~= '' then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[9])) end
end
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[4], tonumber(ARGV[7]), string.sub(KEYS[1], 20)) end
local id = ''
if ARGV[4] ~= '' then
  id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'e', ARGV[4])
  redis.call('PUBLISH', ARGV[5], '{"id":"' .. id .. '",' .. string.sub(ARGV[4], 2))
end
return {'ok', id}
"""

# KEYS: stream. ARGV: payload, channel, maxlen
_EMIT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'e', ARGV[1])
redis.call('PUBLISH', ARGV[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2))
return id
"""


def event_payload(event: Event) -> str:
    """The event's JSON without its id (the stream assigns it)."""
    return event.model_dump_json(by_alias=True, exclude={"id"})


def event_from_entry(entry_id: str, payload: str) -> Event:
    data = json.loads(payload)
    data["id"] = entry_id
    return Event.model_validate(data)


@dataclass
class CommitOutcome:
    status: str  # ok | conflict | missing | exists
    value: str  # event id, or the current JSON on conflict/exists
    retried: bool = False
    """Sent again after Valkey did not answer: an earlier try may have been applied."""


@dataclass(frozen=True)
class Write:
    """One compare-and-set of :meth:`StateStore.commit_many` (the arguments of ``commit``)."""

    agent: AgentState
    expected_version: int
    task: TaskState | None = None
    event: Event | None = None
    ttl_s: int | None = None


PIPELINE_CHUNK = 500
"""Commands sent in one round trip by the batch operations."""

UNREACHABLE: tuple[type[BaseException], ...] = (
    StoreUnavailable,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)
"""What an operation on an unreachable (down, paused, partitioned) Valkey raises."""

RETRY_FIRST_S = 0.05
RETRY_MAX_S = 2.0
FAST_TIMEOUT_S = 3.0
"""A fast store's operation that gets no answer within this long raises ``StoreUnavailable``
(an ``asyncio.timeout`` around it: see ``core.valkey`` on why not redis-py's socket timeout)."""


class Availability(Protocol):
    """What a durable store waits on: whether Valkey answers (``core.valkey.ValkeyWatch``)."""

    @property
    def up(self) -> bool: ...

    @property
    def error(self) -> str | None: ...

    async def wait_up(self, timeout: float) -> bool: ...


class StateStore:
    """Typed access to the orchestrator's keys. All values are validated on read and write."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        stream_maxlen: int = 10_000,
        availability: Availability | None = None,
    ) -> None:
        self.redis = client
        self.stream_maxlen = stream_maxlen
        self.availability = availability
        self.durable = False
        self._commit = client.register_script(_COMMIT)
        self._emit = client.register_script(_EMIT)
        self._stop = _StopWaiting()

    def durable_twin(self) -> StateStore:
        """The same store whose operations wait out a Valkey outage instead of raising."""
        twin = StateStore(
            self.redis, stream_maxlen=self.stream_maxlen, availability=self.availability
        )
        twin.durable = True
        twin._stop = self._stop  # one shutdown switch for both
        return twin

    def stop_waiting(self, grace_s: float = 5.0) -> None:
        """Shutdown: durable operations still waiting for Valkey give up after ``grace_s``."""
        self._stop.deadline = time.monotonic() + grace_s

    async def _run(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        if not self.durable:
            try:
                async with asyncio.timeout(FAST_TIMEOUT_S):
                    return await op()
            except TimeoutError:
                raise StoreUnavailable(
                    f"Valkey did not answer {what} within {FAST_TIMEOUT_S:g} s"
                ) from None
        delay = RETRY_FIRST_S
        waited = 0
        while True:
            try:
                result = await op()
            except UNREACHABLE as exc:
                if self._stop.expired():
                    raise
                if waited == 0:
                    log.warning("Valkey unreachable; %s waits for it: %s", what, exc)
                waited += 1
                if self.availability is not None:
                    await self.availability.wait_up(delay)
                    if self.availability.up:
                        await asyncio.sleep(RETRY_FIRST_S)  # back: retry soon, not in a burst
                else:
                    await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            if waited:
                log.info("Valkey reachable again; %s done after %d retries", what, waited)
            return result

    # -- reads ---------------------------------------------------------------------------------
    async def get_agent(self, agent_id: str) -> AgentState:
        raw = await self._run("a read", lambda: self.redis.get(agent_key(agent_id)))
        if raw is None:
            raise NotFound(f"agent {agent_id} not found")
        return AgentState.model_validate_json(raw)

    async def find_agent(self, agent_id: str) -> AgentState | None:
        try:
            return await self.get_agent(agent_id)
        except NotFound:
            return None

    async def get_task(self, task_id: str) -> TaskState | None:
        raw = await self._run("a read", lambda: self.redis.get(task_key(task_id)))
        return None if raw is None else TaskState.model_validate_json(raw)

    async def get_tasks(self, task_ids: list[str]) -> list[TaskState | None]:
        """Several tasks in one round trip, in order (None where missing)."""
        if not task_ids:
            return []
        raws = await self._run("a read", lambda: self.redis.mget([task_key(t) for t in task_ids]))
        return [None if raw is None else TaskState.model_validate_json(raw) for raw in raws]

    async def list_agents(self, limit: int = 1000) -> list[AgentState]:
        listed = await self._run("a read", lambda: self.redis.zrevrange(INDEX, 0, limit - 1))
        ids = [_text(i) for i in listed]
        if not ids:
            return []
        raws = await self._run("a read", lambda: self.redis.mget([agent_key(i) for i in ids]))
        gone = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
        if gone:  # expired agents: drop them from the index
            await self._run("a cleanup", lambda: self.redis.zrem(INDEX, *gone))
        return [AgentState.model_validate_json(raw) for raw in raws if raw is not None]

    # -- writes --------------------------------------------------------------------------------
    async def commit(
        self,
        agent: AgentState,
        *,
        expected_version: int | None,
        task: TaskState | None = None,
        event: Event | None = None,
        index_score: float | None = None,
        guard_task: bool = False,
        ttl_s: int | None = None,
    ) -> CommitOutcome:
        """Write ``agent`` (and ``task``, and the event) if the stored version still matches."""
        keys, args = self._commit_call(
            agent, expected_version, task, event, index_score, guard_task, ttl_s
        )
        tries = 0

        async def once() -> Any:
            nonlocal tries
            tries += 1
            return await self._commit(keys=keys, args=args)

        outcome = _outcome(await self._run("a state write", once))
        outcome.retried = tries > 1
        return outcome

    async def commit_many(self, writes: list[Write]) -> list[CommitOutcome]:
        """Several independent ``commit`` calls pipelined (one round trip per
        ``PIPELINE_CHUNK``); each stays atomic on its own, none depends on another."""
        outcomes: list[CommitOutcome] = []
        for start in range(0, len(writes), PIPELINE_CHUNK):
            chunk = writes[start : start + PIPELINE_CHUNK]
            tries = 0

            async def once(chunk: list[Write] = chunk) -> list[Any]:
                nonlocal tries
                tries += 1
                return await self._pipe(chunk)

            for result in await self._run("state writes", once):
                outcomes.append(_outcome(result))
                outcomes[-1].retried = tries > 1
        return outcomes

    async def _pipe(self, writes: list[Write]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for w in writes:
            keys, args = self._commit_call(
                w.agent, w.expected_version, w.task, w.event, None, False, w.ttl_s
            )
            await self._commit(keys=keys, args=args, client=pipe)
        results: list[Any] = await pipe.execute()
        return results

    def _commit_call(
        self,
        agent: AgentState,
        expected_version: int | None,
        task: TaskState | None,
        event: Event | None,
        index_score: float | None,
        guard_task: bool,
        ttl_s: int | None,
    ) -> tuple[list[str], list[str]]:
        keys = [agent_key(agent.agent_id), task_key(agent.task_id), STREAM, INDEX]
        args = [
            "" if expected_version is None else str(expected_version),
            agent.model_dump_json(),
            task.model_dump_json(by_alias=True) if task else "",
            event_payload(event) if event else "",
            CHANNEL,
            str(self.stream_maxlen),
            "" if index_score is None else repr(index_score),
            "1" if guard_task else "",
            "" if ttl_s is None else str(ttl_s),
        ]
        return keys, args

    async def emit(self, event: Event) -> Event:
        args = [event_payload(event), CHANNEL, str(self.stream_maxlen)]
        entry_id = await self._run("an event", lambda: self._emit(keys=[STREAM], args=args))
        return event.model_copy(update={"id": _text(entry_id)})

    async def audit(self, record: dict[str, Any]) -> None:
        fields: dict[Any, Any] = {"r": json.dumps(record, default=str)}
        await self._run("an audit record", lambda: self.redis.xadd(AUDIT, fields, maxlen=10_000))

    async def audit_many(self, records: list[dict[str, Any]]) -> None:
        """Append audit records in order, one round trip per ``PIPELINE_CHUNK``."""
        for start in range(0, len(records), PIPELINE_CHUNK):
            chunk = records[start : start + PIPELINE_CHUNK]

            async def send(chunk: list[dict[str, Any]] = chunk) -> None:
                pipe = self.redis.pipeline(transaction=False)
                for record in chunk:
                    pipe.xadd(AUDIT, {"r": json.dumps(record, default=str)}, maxlen=10_000)
                await pipe.execute()

            await self._run("audit records", send)

    async def audit_records(self, count: int = 100) -> list[dict[str, Any]]:
        entries = await self.redis.xrevrange(AUDIT, count=count)
        return [
            json.loads(_text(fields[b"r"] if b"r" in fields else fields["r"]))
            for _, fields in entries
        ]

    # -- events --------------------------------------------------------------------------------
    async def events_after(self, last_id: str, count: int = 1000) -> list[Event]:
        entries = await self.redis.xrange(STREAM, min=f"({last_id}", max="+", count=count)
        return [event_from_entry(_text(i), _field(f)) for i, f in entries]

    async def last_event_id(self) -> str:
        entries = await self.redis.xrevrange(STREAM, count=1)
        return _text(entries[0][0]) if entries else "0-0"


@dataclass
class _StopWaiting:
    deadline: float | None = None

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


def _outcome(result: Any) -> CommitOutcome:
    status, value = (_text(x) for x in cast(list[Any], result))
    return CommitOutcome(status, value)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(fields: dict[Any, Any]) -> str:
    return _text(fields.get(b"e", fields.get("e")))


def require(outcome: CommitOutcome, what: str) -> str:
    if outcome.status == "missing":
        raise NotFound(f"{what} not found")
    if outcome.status != "ok":
        raise Conflict(f"{what} changed concurrently")
    return outcome.value
