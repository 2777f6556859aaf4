"""`nbrelay worker`: a Celery worker whose tasks run jobs on this machine's worker processes.

One event loop thread holds what the runs need: the store (PostgreSQL), the hub (Redis), the WorkerPool (the same
worker processes, warm kernels and exporter as the embedded default) and a JobRecorder. A wake-up on one of
Celery's task threads (one per slot) makes that slot claim queued jobs, oldest first, and run them one after
another until none is left. The lease of every job running here is
renewed every second, and that renewal also brings cancel requests (they come at once as a broadcast,
CANCEL_COMMAND; the renewal covers one lost on its way); a job whose lease this worker lost (it was re-queued or
failed by a reaper) is killed here, and its late results are refused by the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from nbrelay.config import Settings
from nbrelay.executor.celery_app import CANCEL_COMMAND, TASK_NAME, make_celery, queue_name
from nbrelay.executor.pool import WorkerPool
from nbrelay.hub import Hub, open_hub
from nbrelay.hub.publish_queue import PublishQueue
from nbrelay.models import TERMINAL_EVENTS, Event, Job
from nbrelay.recorder import JobRecorder, job_streams, worker_id
from nbrelay.store import open_store
from nbrelay.store.base import JobStore

log = logging.getLogger(__name__)
T = TypeVar("T")
_RENEW_EVERY_S = 1.0
_FENCE_AT = 0.8  # of lease_timeout_s without a successful renewal: stop our runs before a reaper re-queues them
_RENEW_WAIT = 0.1  # of lease_timeout_s: how long one renewal may take before it counts as failed
_SHARED = "workers and web nodes share it (an NFS mount in production)"  # said of each shared folder at start


def _not_a_folder(folder: Path) -> str | None:
    """Why `folder` is no folder on this machine, if it is not one."""
    try:
        if folder.is_dir():
            return None
        return "is not a folder" if folder.exists() else "does not exist"
    except OSError as exc:  # a parent folder this user may not enter
        return f"cannot be reached ({exc.strerror or exc})"


def check_shared_folders(settings: Settings) -> None:
    """Fail at start, clearly, when this machine lacks a folder every node shares, or cannot write it.

    No folder is made: a missing one is most often a share not mounted here, and a folder made in its place would
    take this worker's reports where no web node serves them, while every job it claims failed with "could not
    read the notebook". The write check leaves nothing behind."""
    folders = (
        ("workspace", settings.workspace, "NBRELAY_WORKSPACE (or --workspace)"),
        ("reports folder", settings.reports_dir, "NBRELAY_REPORTS_DIR"),
    )
    for what, folder, setting in folders:
        if (problem := _not_a_folder(folder)) is not None:
            default = (
                " (NBRELAY_REPORTS_DIR is not set: its default, under this worker's data folder, is not shared.)"
                if what == "reports folder" and settings.reports_folder is None
                else ""
            )
            raise SystemExit(
                f"nbrelay worker: the {what} {folder} {problem}, and a worker makes none: {_SHARED}. Mount it here, "
                f"or set {setting} to where it is mounted.{default}"
            )
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".nbrelay-write-check-"):
                pass
        except OSError as exc:
            raise SystemExit(
                f"nbrelay worker: cannot write the {what} {folder} ({exc.strerror or exc}): {_SHARED}. Mount it "
                f"here, writable by this user, or set {setting}."
            ) from exc


class WorkerHost:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.worker = worker_id(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="nbrelay-host", daemon=True)
        self.store: JobStore | None = None
        self.hub: Hub | None = None
        self.events: PublishQueue | None = None
        self.recorder: JobRecorder | None = None
        self.pool = WorkerPool(settings, stopping_reason="interrupted: worker stopped")
        self._ends: dict[int, asyncio.Future[None]] = {}
        self._cancelled: set[int] = set()
        self._lost: set[int] = set()  # jobs of this worker whose leases went to others, counted once each
        self._heartbeat: asyncio.Task[None] | None = None
        self._stopping = False
        self.claimed = 0
        self.lost = 0

    # life cycle (called from Celery's threads) ---------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)

    def run_job(self, hint: int | None) -> int:
        """A wake-up arrived (for job `hint`): run queued jobs, oldest first, until none is left."""
        return self._call(self._run(hint))

    def cancel_soon(self, job_id: int) -> bool:
        """A web node asked every worker to stop job `job_id` (called from Celery's control thread): stop it if it
        runs here; whether it does."""
        running = job_id in self._ends
        if running:
            asyncio.run_coroutine_threadsafe(self._stop_run(job_id, "cancel requested"), self.loop)
        return running

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _start(self) -> None:
        settings = self.settings
        self.store = open_store(settings.database_url)
        await self.store.start()
        self.hub = open_hub(
            settings.broker_url,
            database_url=settings.database_url,
            history_size=settings.history_size,
            history_ttl_s=settings.history_ttl_s,
            subscriber_queue_size=settings.subscriber_queue_size,
        )
        await self.hub.start()
        self.events = PublishQueue(self.hub)  # in order, and kept while Redis is away
        self.events.start()
        self.recorder = JobRecorder(settings, self.store, self.worker, leased=True)
        self.recorder.listeners.append(self._publish)
        self.recorder.announce_file = self._announce_file
        await self.pool.start(self._on_event)
        self._heartbeat = asyncio.create_task(self._renew_forever(), name="leases")
        log.info("worker %s: %s slots, lease %.0f s", self.worker, settings.workers, settings.lease_timeout_s)

    async def _stop(self) -> None:
        self._stopping = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        await self.stop_runs()
        if self.recorder is not None:
            await self.recorder.drain()
        if self.events is not None:
            await self.events.close()
        if self.hub is not None:
            await self.hub.close()
        if self.store is not None:
            await self.store.close()

    async def stop_runs(self) -> None:
        """Take no more jobs; runs under way end as failed: "interrupted: worker stopped"."""
        self._stopping = True
        await self.pool.stop()  # a second call (Celery's shutdown signal, then ours) waits for the first

    # runs ------------------------------------------------------------------------------------------------------
    async def _publish(self, event: Event) -> None:
        assert self.events is not None
        await self.events.publish(event, job_streams(event))

    async def _announce_file(self, stream: str, data: dict[str, Any]) -> None:
        """A change post-run steps made to the shared workspace, told as a web node tells one."""
        assert self.events is not None
        await self.events.publish(Event("file.changed", data), [stream])

    async def _run(self, hint: int | None) -> int:
        """Claim and run jobs, oldest first, until the queue is empty; how many ran. A wake-up only starts this
        slot: going on to the next queued job without a message in between keeps the slot busy without a round
        trip through the broker, and the wake-ups left over find the queue empty (one claim each)."""
        assert self.store is not None
        ran = 0
        while not self._stopping:
            while self.pool.free_slots() == 0:  # noqa: ASYNC110 (rare: a worker process being replaced after it died)
                await asyncio.sleep(0.1)
            asked = time.monotonic()  # the lease starts no sooner
            job = await self.store.claim(self.worker, lease_s=self.settings.lease_timeout_s)
            if job is None:
                break  # another worker took it, or it was cancelled: wake-ups are only hints
            self.claimed += 1
            ran += 1
            log.info("job %s (attempt %s) claimed on a wake-up for job %s", job.id, job.attempt, hint)
            await self._run_claimed(job, lease_until=asked + _FENCE_AT * self.settings.lease_timeout_s)
        return ran

    async def _run_claimed(self, job: Job, lease_until: float) -> None:
        """Run a claimed job to its end, post-run steps included (its lease is renewed all that time: the job is
        in `_ends`). Its worker process stops the run by itself past `lease_until` unless a renewal moves it on."""
        assert self.recorder is not None
        end = self._ends[job.id] = self.loop.create_future()
        try:
            spec = await self.recorder.spec_or_fail(job)
            if spec is None:
                return
            await self.pool.run(spec, lease_until=lease_until)
            await end
            await self.recorder.finished(job.id)
        finally:
            self._ends.pop(job.id, None)
            self._cancelled.discard(job.id)
            self._lost.discard(job.id)

    async def _on_event(self, event: Event) -> None:
        assert self.recorder is not None
        try:
            await self.recorder.on_event(event)
        finally:
            # The run is over whatever became of its record: its slot goes on (found from outside: a failed
            # record of the end left the slot waiting for ever, the job counted lost every second).
            if event.type in TERMINAL_EVENTS and event.job_id is not None:
                end = self._ends.get(event.job_id)
                if end is not None and not end.done():
                    end.set_result(None)

    # leases ----------------------------------------------------------------------------------------------------
    async def _renew_forever(self) -> None:
        assert self.store is not None and self.recorder is not None
        lease_s = self.settings.lease_timeout_s
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(min(_RENEW_EVERY_S, lease_s / 3))
            # From the claim to the end of the post-run steps: a job's steps run on its lease too (found from
            # outside: steps longer than the lease had the job taken over, run again, and failed "worker lost").
            running = set(self._ends)
            if not running:
                last_ok = time.monotonic()
                continue
            asked = time.monotonic()
            try:
                # A store that hangs rather than refuses must end in the fence too (found from outside: a dropped
                # connection held the renewal, and the run, past the lease, beside the next attempt).
                async with asyncio.timeout(lease_s * _RENEW_WAIT):  # not wait_for, which may swallow a cancel (3.11)
                    held = await self.store.renew_leases(self.worker, running, lease_s=lease_s)
                last_ok = time.monotonic()
                self.pool.extend_leases({job_id for job_id in running if job_id in held}, asked + _FENCE_AT * lease_s)
            except Exception as exc:
                log.warning("could not renew leases: %s", exc or type(exc).__name__)
                if time.monotonic() - last_ok > _FENCE_AT * lease_s:
                    # Cut off from the store: a reaper will soon give these jobs to others. Stop them first.
                    for job_id in running:
                        await self._stop_run(job_id, "lease could not be renewed")
                continue
            for job_id in running:
                end = self._ends.get(job_id)
                if job_id not in held and end is not None and end.done():
                    continue  # its run is over: it ended meanwhile (its steps' save, if any, finds out itself)
                if job_id not in held:
                    if job_id not in self._lost:
                        self._lost.add(job_id)
                        self.lost += 1
                    self.recorder.disown(job_id)
                    await self._stop_run(job_id, "lease lost")
                elif held[job_id]:
                    await self._stop_run(job_id, "cancel requested")

    async def _stop_run(self, job_id: int, why: str) -> None:
        if job_id in self._cancelled:
            return
        self._cancelled.add(job_id)
        log.info("stopping job %s: %s", job_id, why)
        await self.pool.cancel(job_id)


def serve_metrics(host: WorkerHost, port: int) -> None:
    """/metrics of this worker on `port` (Prometheus): its slots, running jobs, claims and lost leases."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import Metric

    from nbrelay.metrics import JobCollector, JobFigures

    figures = JobFigures()

    class Live(JobCollector):
        def collect(self) -> Iterator[Metric]:
            figures.slots, figures.running = host.settings.workers, len(host.pool.running())
            figures.claimed, figures.leases_lost = host.claimed, host.lost
            return super().collect()

    registry = CollectorRegistry()
    registry.register(Live(figures))
    start_http_server(port, addr=host.settings.host, registry=registry)
    log.info("worker metrics on http://%s:%s/metrics", host.settings.host, port)


def run_worker(settings: Settings, loglevel: str = "INFO") -> None:
    """Start the Celery worker with NBRELAY_WORKERS slots; returns when it has stopped."""
    from celery import signals
    from celery.worker.control import control_command

    check_shared_folders(settings)
    app = make_celery(settings)
    host = WorkerHost(settings)

    @app.task(name=TASK_NAME, ignore_result=True)
    def run(job_id: int | None = None) -> int:
        return host.run_job(job_id)

    @control_command(name=CANCEL_COMMAND, args=[("job_id", int)], signature="<job_id>")
    def cancel(state: Any, job_id: int) -> dict[str, bool]:
        """Stop job <job_id> if it runs on this worker."""
        return {"running": host.cancel_soon(int(job_id))}

    def shutting_down(**_kw: Any) -> None:
        # Warm shutdown waits for the tasks: end the runs, so it does not wait hours for them.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(host.stop_runs(), host.loop)

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    host.start()
    if settings.worker_metrics_port:
        serve_metrics(host, settings.worker_metrics_port)
    try:
        app.worker_main(
            [
                "worker",
                "--pool=threads",
                f"--concurrency={settings.workers}",
                f"--queues={queue_name(settings)}",
                f"--hostname=nbrelay-{os.getpid()}@{settings.node_name}",
                f"--loglevel={loglevel}",
                "--without-gossip",
                "--without-mingle",
            ]
        )
    finally:
        host.stop()
