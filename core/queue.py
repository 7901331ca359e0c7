"""The task queue: a BullMQ queue (the ``bullmq`` package), wire-compatible with Node BullMQ.

One job per agent (job id = agent id), priority 1 (highest) to 10, attempts with exponential
backoff. The worker's concurrency is ``min(ORCHESTRATOR_QUEUE_CONCURRENCY, MAX_CONCURRENT_AGENTS)``
so an instance never holds more live agents than allowed. Pause/resume is queue-wide. A job whose
instance died is moved back to waiting by BullMQ's stalled-job check and picked up by another.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bullmq import Queue, Worker
from bullmq.custom_errors.unrecoverable_error import UnrecoverableError

from core.engine_api import QueueStats
from core.settings import Settings

log = logging.getLogger(__name__)

JOB_NAME = "agent"
COUNT_TYPES = ("waiting", "prioritized", "delayed", "active", "completed", "failed", "paused")

Processor = Callable[[str, int, int], Awaitable[dict[str, Any]]]
"""``(agent_id, attempt, max_attempts) -> result``; raise ``RetryLater`` to use an attempt."""


class RetryLater(Exception):
    """The attempt failed in a way that another attempt may fix (BullMQ retries with backoff)."""


class GiveUp(UnrecoverableError):  # type: ignore[misc]
    """The job failed for good: no retry."""


class TaskQueue:
    def __init__(self, settings: Settings, connection: dict[str, Any]) -> None:
        self.settings = settings
        self._connection = connection
        self.queue = Queue(settings.queue_name, {"connection": dict(connection)})
        self.worker: Worker | None = None
        self.concurrency = min(
            settings.orchestrator_queue_concurrency, settings.max_concurrent_agents
        )

    async def add(self, agent_id: str, task_id: str, priority: int) -> None:
        await self.queue.add(
            JOB_NAME,
            {"agentId": agent_id, "taskId": task_id},
            {
                "jobId": agent_id,
                "priority": priority,
                "attempts": self.settings.queue_attempts,
                "backoff": {"type": "exponential", "delay": self.settings.queue_backoff_ms},
                "removeOnComplete": {"count": 1000},
                "removeOnFail": {"count": 1000},
            },
        )

    def start_worker(self, process: Processor, *, name: str) -> None:
        async def _processor(job: Any, token: str) -> dict[str, Any]:
            attempt = int(job.attemptsMade) + 1
            attempts = int(job.opts.get("attempts") or 1)
            try:
                return await process(str(job.data["agentId"]), attempt, attempts)
            except RetryLater:
                if attempt >= attempts:
                    raise GiveUp("no attempts left") from None
                raise

        self.worker = Worker(
            self.settings.queue_name,
            _processor,
            {
                "connection": {**self._connection, "socket_timeout": None},
                "concurrency": self.concurrency,
                "name": name,
                "lockDuration": self.settings.queue_lock_duration_ms,
                "stalledInterval": self.settings.queue_stalled_interval_ms,
                # a job whose instance died comes back (crash recovery); the spawner caps the
                # attempts, the queue only gives up on a job that keeps stalling
                "maxStalledCount": max(1, self.settings.queue_attempts),
            },
        )

    async def remove_pending(self, agent_id: str) -> bool:
        """Remove a job that has not started yet. False if it is active or gone."""
        state = await self.queue.getJobState(agent_id)
        if state in ("waiting", "prioritized", "delayed", "paused", "wait"):
            with contextlib.suppress(Exception):
                return bool(await self.queue.remove(agent_id))
        return False

    async def job_state(self, agent_id: str) -> str | None:
        return str(await self.queue.getJobState(agent_id) or "") or None

    async def pause(self) -> None:
        await self.queue.pause()

    async def resume(self) -> None:
        await self.queue.resume()

    async def is_paused(self) -> bool:
        return bool(await self.queue.isPaused())

    async def stats(self) -> QueueStats:
        counts = await self.queue.getJobCounts(*COUNT_TYPES)
        paused = await self.is_paused()
        try:
            # a worker holds two named connections (commands + blocking wait): count names
            workers = len(
                {w.get("rawname") or w.get("name") for w in await self.queue.get_workers()}
            )
        except Exception:  # CLIENT LIST may be refused by some providers
            workers = 1 if self.worker else 0
        return QueueStats(
            waiting=int(counts.get("waiting", 0)) + int(counts.get("paused", 0)),
            prioritized=int(counts.get("prioritized", 0)),
            delayed=int(counts.get("delayed", 0)),
            active=int(counts.get("active", 0)),
            completed=int(counts.get("completed", 0)),
            failed=int(counts.get("failed", 0)),
            paused=paused,
            workers=workers,
            concurrency=self.concurrency,
            max_concurrent_agents=self.settings.max_concurrent_agents,
        )

    async def ping(self) -> bool:
        return bool(await self.queue.client.ping())

    async def close_worker(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            await worker.close()

    async def close(self) -> None:
        await self.close_worker()
        await self.queue.close()
