"""The worker process of the local executor: one job at a time, warm kernels, a reused HTML exporter.

Commands arrive on `inbox` ("run", spec, lease_until) / ("lease", job_id, lease_until) / ("cancel", job_id) /
("stop",); everything that happens goes out on `outbox` as ("event", job_id, type, data) and ("done", job_id, state,
error, report_written).

A job on a lease (scale-out: `nbrelay worker`) comes with the monotonic time its lease holds until here, moved on
by each renewal of the parent. Past it this process stops the run itself, sends none of its events and writes no
report: the parent may be frozen or cut off from the store, and another worker may have the job by now (found from
outside: a worker whose main process was stopped for 15 s ran its job on beside the next attempt, and on resuming
published its events and wrote its report over the other's).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import nbformat

from nbrelay.models import JobState
from nbrelay.runner.execute import run_job
from nbrelay.runner.html import ReportWriter
from nbrelay.runner.kernels import KernelPool
from nbrelay.runner.lifeline import die_with_parent
from nbrelay.runner.spec import RunSpec

log = logging.getLogger(__name__)
_LEASE_CHECK_S = 0.25
LEASE_LAPSED = "stopped by its worker: its lease was not renewed in time (the worker was cut off from the store)"


@dataclass(frozen=True)
class WorkerConfig:
    cwd: Path
    kernel_pool_size: int
    kernel_startup_timeout_s: float
    fork_kernels: bool
    kernel_memory_max_mb: int  # 0: no limit
    runtime_dir: Path  # private (0700): kernel connection files, IPC sockets, temporary files (nbrelay.runtime)
    warm_kernels: tuple[str, ...] = ("python3",)


def _warm_exporter(reports: ReportWriter) -> None:
    # The first export loads templates and filters (~0.5 s); do it before the first job needs it. Likewise
    # papermill, which a job with parameters imports (~75 ms of a worker's first such job, measured).
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1", outputs=[])])
    reports.to_html(nb)
    import papermill.parameterize  # noqa: F401


def main(index: int, config: WorkerConfig, inbox: Queue[Any], outbox: Queue[Any]) -> None:
    die_with_parent()  # a worker must not outlive the server that dispatched its jobs (its kernels follow it)
    # Kernels inherit these: their connection files, sockets and temporary files go to the private folder.
    runtime = str(config.runtime_dir)
    os.environ.update(JUPYTER_RUNTIME_DIR=runtime, NBRELAY_RUNTIME_DIR=runtime, TMPDIR=runtime)
    tempfile.tempdir = None  # read TMPDIR again
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the server's terminal is the server's to handle
    logging.basicConfig(level=logging.WARNING, format=f"worker {index}: %(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(index, config, inbox, outbox))


async def _serve(index: int, config: WorkerConfig, inbox: Queue[Any], outbox: Queue[Any]) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    def read_inbox() -> None:
        while True:
            command = inbox.get()
            loop.call_soon_threadsafe(commands.put_nowait, command)
            if command[0] == "stop":
                return

    threading.Thread(target=read_inbox, name="inbox", daemon=True).start()
    pool = KernelPool(
        size=config.kernel_pool_size,
        cwd=config.cwd,
        startup_timeout_s=config.kernel_startup_timeout_s,
        fork=config.fork_kernels,
        memory_max_bytes=config.kernel_memory_max_mb * 2**20,
    )
    reports = ReportWriter()
    for name in config.warm_kernels:
        pool.refill(name)
    await asyncio.to_thread(_warm_exporter, reports)
    outbox.put(("ready", index))

    stops: dict[int, asyncio.Event] = {}
    tasks: set[asyncio.Task[None]] = set()
    leases: dict[int, float] = {}  # job id → the monotonic time its lease holds until (jobs on leases only)

    def still_ours(job_id: int) -> bool:
        return job_id not in leases or time.monotonic() < leases[job_id]

    async def run(spec: RunSpec, stop: asyncio.Event) -> None:
        def emit(kind: str, data: dict[str, Any]) -> None:
            if still_ours(spec.job_id):
                outbox.put(("event", spec.job_id, kind, data))

        try:
            outcome = await run_job(spec, pool, reports, emit, stop, still_ours=lambda: still_ours(spec.job_id))
            error = outcome.error.to_dict() if outcome.error else None
            if not still_ours(spec.job_id):
                error = {"reason": LEASE_LAPSED}
                outcome = replace(outcome, state=JobState.FAILED, report_written=False)
            outbox.put(("done", spec.job_id, outcome.state.value, error, outcome.report_written))
        except BaseException as exc:  # the parent must always hear how a job ended
            outbox.put(("done", spec.job_id, "failed", {"reason": f"worker error: {exc!r}"}, False))
            raise
        finally:
            stops.pop(spec.job_id, None)
            leases.pop(spec.job_id, None)

    async def watch_leases() -> None:
        while True:
            await asyncio.sleep(_LEASE_CHECK_S)
            for job_id in [job_id for job_id in leases if not still_ours(job_id) and job_id in stops]:
                if not stops[job_id].is_set():
                    log.warning("job %s: its lease was not renewed in time: stopping its run here", job_id)
                    stops[job_id].set()

    watcher = asyncio.create_task(watch_leases())
    while True:
        command = await commands.get()
        if command[0] == "run":
            spec: RunSpec = command[1]
            if command[2] is not None:
                leases[spec.job_id] = command[2]
            stops[spec.job_id] = stop = asyncio.Event()
            task = asyncio.create_task(run(spec, stop))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif command[0] == "lease":
            if command[1] in leases:
                leases[command[1]] = max(leases[command[1]], command[2])
        elif command[0] == "cancel":
            if command[1] in stops:
                stops[command[1]].set()
        elif command[0] == "stop":
            watcher.cancel()
            for stop in stops.values():
                stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await pool.close()
            return
