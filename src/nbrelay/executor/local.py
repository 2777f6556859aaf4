"""The local executor (the embedded default): this server runs the jobs on worker processes of its own.

Dispatch hands the oldest queued job to a free worker process once the store's claim succeeded, so the queue
order and the concurrency cap are the store's and the pool's. Jobs a dead server left running cannot be resumed:
at start they fail and say why.
"""

from __future__ import annotations

import asyncio
import logging

from nbrelay.config import Settings
from nbrelay.errors import log_failure
from nbrelay.executor.pool import WorkerPool
from nbrelay.models import TERMINAL_EVENTS, Event, Job, JobState
from nbrelay.recorder import JobRecorder
from nbrelay.store.base import JobStore

log = logging.getLogger(__name__)
RESTART_REASON = "interrupted: server restarted"


class LocalExecutor:
    name = "local"

    def __init__(self, settings: Settings, store: JobStore, recorder: JobRecorder):
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.pool = WorkerPool(settings)
        self._lock = asyncio.Lock()
        self._wanted = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.recover()
        await self.pool.start(self._on_event)
        await self.dispatch()
        self._dispatcher = asyncio.create_task(self._dispatch_forever(), name="dispatch")

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await self.recorder.drain()  # steps already under way end first
        await self.pool.stop()

    async def recover(self) -> None:
        """Jobs a dead server left running fail, and say why. Queued jobs stay queued."""
        for job in await self.store.jobs_in_state(JobState.RUNNING):
            await self.recorder.end(job, JobState.FAILED, RESTART_REASON)

    def queued(self, job: Job) -> None:
        self._wanted.set()

    async def cancel(self, job_id: int) -> None:
        await self.pool.cancel(job_id)

    async def ping(self) -> None:
        """Dispatch goes on and a worker process is alive (a dead one is started again within a second)."""
        if self._dispatcher is None or self._dispatcher.done():
            raise RuntimeError("the dispatcher of queued jobs is not running")
        self.pool.check()

    async def slots(self) -> int:
        return self.settings.workers

    async def _on_event(self, event: Event) -> None:
        await self.recorder.on_event(event)
        if event.type in TERMINAL_EVENTS:
            self._wanted.set()  # a worker is free again

    async def _dispatch_forever(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            try:
                await self.dispatch()
            except Exception as exc:
                log_failure(log, exc, "dispatch failed; retrying on the next event")

    async def dispatch(self) -> None:
        """Hand queued jobs, oldest first, to free worker processes; the store's claim decides who runs."""
        async with self._lock:
            while self.pool.free_slots() > 0:
                job = await self.store.claim(self.recorder.worker, lease_s=None)
                if job is None:
                    return
                spec = await self.recorder.spec_or_fail(job)
                if spec is not None:
                    await self.pool.run(spec)
