"""The celery executor, web node side: tell the workers that jobs wait, and reap the jobs of lost workers.

Jobs run in `nbrelay worker` processes (executor/worker_host.py), which claim them from the store, renew their
leases and record their events themselves. What is left for web nodes: one wake-up message per queued job, the
reaper (a running job whose lease ran out is re-queued as a new attempt or fails with "worker lost"), and the
repair of wake-ups that got lost. Reaping is safe on every node at once: each re-queue or failure is one
compare-and-set in the store, so exactly one node's wins and only that one announces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nbrelay.config import Settings
from nbrelay.errors import log_failure
from nbrelay.executor.celery_app import CANCEL_COMMAND, TASK_NAME, make_celery, queue_name
from nbrelay.models import Job, JobState
from nbrelay.recorder import JobRecorder
from nbrelay.store.base import JobStore

log = logging.getLogger(__name__)
PING_CONNECT_TIMEOUT_S = 2.0


def reap_interval_s(lease_timeout_s: float) -> float:
    return min(5.0, max(0.25, lease_timeout_s / 4))


class CeleryExecutor:
    name = "celery"

    def __init__(self, settings: Settings, store: JobStore, recorder: JobRecorder):
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.app = make_celery(settings)
        self.queue = queue_name(settings)
        # Sending blocks on the broker: one thread of its own, so the event loop never waits on it.
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="celery-send")
        self._reaper: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Future[Any]] = set()
        self.lease_expiries = 0
        self.requeues = 0

    async def start(self) -> None:
        await self.repair(min_age_s=0)  # jobs queued while no node was up
        self._reaper = asyncio.create_task(self._reap_forever(), name="reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
        await asyncio.gather(*self._sends, return_exceptions=True)
        self._sender.shutdown(wait=True)
        await self.recorder.drain()

    def queued(self, job: Job) -> None:
        self._send(job.id)

    def _send(self, job_id: int) -> None:
        self._in_sender(self._send_now, job_id)

    def _in_sender(self, send: Any, job_id: int) -> None:
        """Run `send(job_id)` on the sender's thread, without waiting for it."""
        future = asyncio.get_running_loop().run_in_executor(self._sender, send, job_id)
        self._sends.add(future)
        future.add_done_callback(self._sends.discard)

    def _send_now(self, job_id: int) -> None:
        try:
            self.app.send_task(TASK_NAME, args=[job_id], queue=self.queue)
        except Exception as exc:  # the repair pass sends it again once the broker is back
            log_failure(log, exc, "could not tell the workers that job %s waits; it is told again later", job_id)

    async def cancel(self, job_id: int) -> None:
        """Tell every worker at once (a broadcast: the one running the job stops it before its next cell). A
        broadcast that is lost on its way costs a second at most: a worker also reads cancel_requested with each
        lease renewal."""
        self._in_sender(self._cancel_now, job_id)

    def _cancel_now(self, job_id: int) -> None:
        try:
            self.app.control.broadcast(CANCEL_COMMAND, arguments={"job_id": job_id})
        except Exception as exc:  # the next lease renewal brings the cancel
            log.warning("could not tell the workers to stop job %s (%s); they learn it within a second", job_id, exc)

    async def ping(self) -> None:
        """The broker takes a connection (a new one: the sender's may be busy). The job database is asked apart."""

        def connect() -> None:
            with self.app.connection_for_write(connect_timeout=PING_CONNECT_TIMEOUT_S) as conn:
                conn.ensure_connection(max_retries=0)

        await asyncio.to_thread(connect)

    async def slots(self) -> int:
        """The slots of the live workers (their Celery pool sizes), as the workers answer a broadcast."""

        def ask() -> int:
            stats = self.app.control.inspect(timeout=1.0).stats() or {}
            return sum(int(s.get("pool", {}).get("max-concurrency", 0)) for s in stats.values())

        return await asyncio.to_thread(ask)

    # lost workers and lost messages ------------------------------------------------------------------------------
    async def _reap_forever(self) -> None:
        interval = reap_interval_s(self.settings.lease_timeout_s)
        last_repair = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
                if time.monotonic() - last_repair >= self.settings.lease_timeout_s:
                    last_repair = time.monotonic()
                    await self.repair(min_age_s=self.settings.lease_timeout_s)
            except Exception as exc:
                log_failure(log, exc, "reaping failed; retrying in %.1f s", interval)

    async def reap(self) -> None:
        """Running jobs whose lease ran out: re-queue as a new attempt while retries last, else fail."""
        for job in await self.store.expired_leases():
            self.lease_expiries += 1
            reason = f"worker lost: {job.worker} stopped renewing its lease"
            if job.attempt <= self.settings.lost_job_retries:
                again = await self.recorder.requeue(job, reason)
                if again is not None:
                    self.requeues += 1
                    log.warning("job %s re-queued as attempt %s (%s)", job.id, again.attempt, reason)
                    self.queued(again)
            elif await self.recorder.end(job, JobState.FAILED, reason) is not None:
                log.warning("job %s failed: %s", job.id, reason)

    async def repair(self, *, min_age_s: float) -> None:
        """Send wake-ups again when fewer wait in the broker than jobs in the store's queue (a message lost with
        a broker that restarted empty, or a send that failed); only for jobs queued for at least `min_age_s`.
        An extra wake-up costs one empty claim."""
        queued = await self.store.oldest_queued(limit=10_000)
        cutoff = time.time() - min_age_s
        waiting = [job for job in queued if job.created_at.timestamp() <= cutoff]
        if not waiting:
            return
        in_broker = await asyncio.get_running_loop().run_in_executor(self._sender, self._broker_depth)
        for job in waiting[: max(0, len(queued) - in_broker)]:
            self._send(job.id)

    def _broker_depth(self) -> int:
        with contextlib.suppress(Exception), self.app.connection_for_write() as conn:
            return int(conn.default_channel.queue_declare(queue=self.queue, passive=True).message_count)
        return 0
