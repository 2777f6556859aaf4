"""Worker processes on this machine, one job each at a time: what both executors run jobs on (the server's own
on the embedded default, `nbrelay worker`'s on a worker machine).

The parent side here only hands out specs and relays what workers report; it watches the workers, and when one
dies (or overruns its job's deadline by far) it kills the job's kernel, reports the job ended, and starts a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from nbrelay.config import Settings
from nbrelay.errors import log_failure
from nbrelay.executor.worker import WorkerConfig
from nbrelay.executor.worker import main as worker_main
from nbrelay.models import STATE_EVENT, Event, JobState
from nbrelay.runner.spec import RunSpec
from nbrelay.runtime import make_runtime_dir, remove_runtime_dir

log = logging.getLogger(__name__)

# Called for every event of a job, in order, one at a time; terminal events carry the outcome in `data`.
OnEvent = Callable[[Event], Awaitable[None]]
_WATCH_INTERVAL_S = 0.5
# Past its own timeout and grace, a worker that still has not reported its job is killed after this long.
_HARD_DEADLINE_SLACK_S = 15.0
_CANCELLED_EARLY_KEPT = 1000  # cancels of jobs no worker had: a job the dispatcher failed instead is never handed over


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    inbox: Any
    job_id: int | None = None
    kernel_pid: int | None = None
    hard_deadline: float | None = None
    cancel_requested: bool = False
    ready: bool = False
    # Its run is over but not yet recorded: the slot is not free until the job's end is in the store, or a new
    # job would show as running beside it (more running than the cap, seen by tests/chaos/test_jobs.py).
    recording: bool = False
    idle_since: float = field(default_factory=time.monotonic)


@dataclass
class WorkerPool:
    settings: Settings
    _workers: list[_Worker] = field(default_factory=list)
    _on_event: OnEvent | None = None
    _messages: asyncio.Queue[tuple[Any, ...]] | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _stopping: bool = False
    _stopped: asyncio.Future[None] | None = None
    # Jobs cancelled after the store's claim and before their hand-over to a worker (the dispatcher builds the
    # spec in between): told to stop as they are handed over, so no cell of theirs starts.
    _cancelled_early: dict[int, None] = field(default_factory=dict)

    stopping_reason: str = "interrupted: server stopped"

    def __post_init__(self) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop
        self._outbox: Any = self._ctx.Queue()
        self.runtime_dir = make_runtime_dir(self.settings.data_dir)
        self._config = WorkerConfig(
            cwd=self.settings.workspace,
            runtime_dir=self.runtime_dir,
            kernel_pool_size=self.settings.kernel_pool_size,
            kernel_startup_timeout_s=self.settings.kernel_startup_timeout_s,
            fork_kernels=self.settings.fork_kernels,
            kernel_memory_max_mb=self.settings.kernel_memory_max_mb,
        )

    async def start(self, on_event: OnEvent) -> None:
        loop = asyncio.get_running_loop()
        self._on_event = on_event
        self._messages = asyncio.Queue()
        messages = self._messages

        def read_outbox() -> None:
            while True:
                message = self._outbox.get()
                if message is None:
                    return
                loop.call_soon_threadsafe(messages.put_nowait, message)

        threading.Thread(target=read_outbox, name="executor-outbox", daemon=True).start()
        self._workers = [self._spawn(i) for i in range(self.settings.workers)]
        self._tasks = [asyncio.create_task(self._pump()), asyncio.create_task(self._watch())]

    def _spawn(self, index: int) -> _Worker:
        inbox = self._ctx.Queue()
        process = self._ctx.Process(
            target=worker_main,
            args=(index, self._config, inbox, self._outbox),
            name=f"nbrelay-worker-{index}",
            daemon=True,
        )
        process.start()
        return _Worker(index=index, process=process, inbox=inbox)

    def free_slots(self) -> int:
        if self._stopping:
            return 0
        return sum(1 for w in self._workers if w.job_id is None and not w.recording and w.process.is_alive())

    def check(self) -> None:
        """Raise, saying what, unless the pool takes jobs: not stopping, its tasks running, a worker alive."""
        if self._stopping:
            raise RuntimeError("the worker processes are stopping")
        if any(task.done() for task in self._tasks):
            raise RuntimeError("the worker pool's event pump has stopped")
        if not any(worker.process.is_alive() for worker in self._workers):
            raise RuntimeError(f"none of the {len(self._workers)} worker processes is alive (they are started again)")

    def running(self) -> set[int]:
        return {w.job_id for w in self._workers if w.job_id is not None}

    async def run(self, spec: RunSpec, lease_until: float | None = None) -> None:
        """Hand `spec` to the free worker idle longest. `lease_until` (monotonic): the job is on a lease, which
        holds here until then unless `extend_leases` moves it on; past it the worker stops the run itself."""
        free = [w for w in self._workers if w.job_id is None and not w.recording and w.process.is_alive()]
        if not free:
            raise RuntimeError("no free worker: check free_slots() first")
        # The worker idle longest has had the most time to refill its warm kernels.
        worker = min(free, key=lambda w: w.idle_since)
        worker.job_id = spec.job_id
        worker.kernel_pid = None
        worker.cancel_requested = False
        worker.hard_deadline = (
            time.monotonic() + spec.timeout_s + spec.interrupt_grace_s + _HARD_DEADLINE_SLACK_S
            if spec.timeout_s
            else None
        )
        worker.inbox.put(("run", spec, lease_until))
        if spec.job_id in self._cancelled_early:
            del self._cancelled_early[spec.job_id]
            self._tell_cancel(worker)  # the worker reads it before the run's first step: no cell starts

    def extend_leases(self, job_ids: set[int], until: float) -> None:
        """The leases of `job_ids` were renewed: their workers may run them on until `until` (monotonic)."""
        for worker in self._workers:
            if worker.job_id in job_ids:
                worker.inbox.put(("lease", worker.job_id, until))

    async def cancel(self, job_id: int) -> None:
        worker = self._worker_of(job_id)
        if worker is None:  # claimed, not handed over yet (or over): remembered for `run`
            self._cancelled_early[job_id] = None
            while len(self._cancelled_early) > _CANCELLED_EARLY_KEPT:
                self._cancelled_early.pop(next(iter(self._cancelled_early)))
            return
        self._tell_cancel(worker)

    def _tell_cancel(self, worker: _Worker) -> None:
        worker.cancel_requested = True
        grace = self.settings.interrupt_grace_s + _HARD_DEADLINE_SLACK_S
        worker.hard_deadline = min(worker.hard_deadline or float("inf"), time.monotonic() + grace)
        worker.inbox.put(("cancel", worker.job_id))

    async def _emit(self, kind: str, job_id: int, data: dict[str, Any]) -> None:
        assert self._on_event is not None
        try:
            await self._on_event(Event(kind, {"job": job_id, **data}))
        except Exception as exc:
            log_failure(log, exc, "handling %s of job %s failed", kind, job_id)

    def _worker_of(self, job_id: int) -> _Worker | None:
        return next((w for w in self._workers if w.job_id == job_id), None)

    async def _pump(self) -> None:
        assert self._messages is not None
        while True:
            message = await self._messages.get()
            try:
                await self._handle(message)
            finally:
                self._messages.task_done()

    async def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            self._workers[message[1]].ready = True
        elif kind == "event":
            _, job_id, event_type, data = message
            worker = self._worker_of(job_id)
            if event_type == "job.started" and worker is not None:
                worker.kernel_pid = data.get("pid")
            await self._emit(event_type, job_id, data)
        elif kind == "done":
            _, job_id, state, error, report_written = message
            worker = self._worker_of(job_id)
            if worker is not None:
                worker.job_id = worker.kernel_pid = worker.hard_deadline = None
                worker.idle_since = time.monotonic()
                worker.recording = True
            if self._stopping and state == JobState.CANCELLED and not (worker and worker.cancel_requested):
                state, error = JobState.FAILED.value, {**(error or {}), "reason": self.stopping_reason}
            try:
                await self._emit(
                    STATE_EVENT[JobState(state)], job_id, {"state": state, "error": error, "report": report_written}
                )
            finally:
                if worker is not None:
                    worker.recording = False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(_WATCH_INTERVAL_S)
            now = time.monotonic()
            for i, worker in enumerate(self._workers):
                if worker.process.is_alive() and worker.hard_deadline is not None and now > worker.hard_deadline:
                    log.warning("worker %s overran job %s: killing it", worker.index, worker.job_id)
                    worker.process.kill()
                    await asyncio.to_thread(worker.process.join, 5)
                if not worker.process.is_alive() and not self._stopping:
                    self._workers[i] = self._spawn(worker.index)
                    await self._bury(worker)

    async def _bury(self, worker: _Worker) -> None:
        """A worker died: make sure its kernel died too, and report its job as ended."""
        if worker.kernel_pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.kernel_pid, signal.SIGKILL)
        if worker.job_id is None:
            return
        if self._stopping:
            state, reason = JobState.FAILED, self.stopping_reason
        elif worker.cancel_requested:
            state, reason = JobState.CANCELLED, "cancelled by request (worker killed after the grace period)"
        elif worker.hard_deadline is not None and time.monotonic() > worker.hard_deadline:
            state, reason = JobState.TIMED_OUT, "job exceeded its timeout (worker killed)"
        else:
            state, reason = JobState.FAILED, f"worker process died (exit code {worker.process.exitcode})"
        await self._emit(
            STATE_EVENT[state], worker.job_id, {"state": state.value, "error": {"reason": reason}, "report": False}
        )

    async def stop(self) -> None:
        """Stop the workers (runs under way end as failed: `stopping_reason`). Safe to call again, from anywhere:
        every call returns once the one stop has finished."""
        if self._stopped is None:
            self._stopped = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopped)

    async def _stop(self) -> None:
        self._stopping = True
        for worker in self._workers:
            if not worker.process.is_alive():
                continue
            if worker.ready or worker.job_id is not None:
                worker.inbox.put(("stop",))
            else:  # still starting (imports, its zygote): it holds nothing, and a stop would wait for its start
                worker.process.kill()  # what it started goes with it (kernels: PDEATHSIG; zygote: its stdin closes)
        deadline = time.monotonic() + self.settings.interrupt_grace_s + 10
        for worker in self._workers:
            await asyncio.to_thread(worker.process.join, max(0.1, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 5)
        # Let the pump relay what the workers said before they stopped.
        assert self._messages is not None
        await asyncio.sleep(0.05)  # the outbox reader thread hands messages over through the loop
        await self._messages.join()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for worker in self._workers:
            if worker.job_id is not None:
                await self._bury(worker)
        self._outbox.put(None)
        remove_runtime_dir(self.settings.data_dir, self.runtime_dir)
