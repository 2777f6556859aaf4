"""What a job's run says, recorded: each runner event goes to the store first, then to the listeners (push).

The same recorder serves wherever jobs run: in the server on the embedded default, in `nbrelay worker` on a
worker machine. Its saves are fenced by the worker's id, so a worker that lost a job (its lease ran out and the
job was re-queued or failed) can no longer change it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from nbrelay.config import Settings
from nbrelay.errors import NbrelayError, is_outage, reason_of
from nbrelay.files import Areas, Workspace, change_stream
from nbrelay.models import EVENT_STATE, STATE_EVENT, TERMINAL_EVENTS, Event, Job, JobError, JobState, transition
from nbrelay.runner.spec import RunSpec
from nbrelay.steps import run_steps
from nbrelay.store.base import JobStore

log = logging.getLogger(__name__)
_OWNERSHIP_CHECK_S = 1.0  # on leases: how stale the knowledge that a running job is still ours may be
_RETRY_FIRST_S, _RETRY_MAX_S = 0.25, 5.0  # a job's end that the store refused is tried again after these waits
T = TypeVar("T")

Listener = Callable[[Event], Awaitable[None]]


def job_event(job: Job, kind: str | None = None, **extra: Any) -> Event:
    """The event announcing `job`'s current state (or `kind`), with what a client needs to show it."""
    data: dict[str, Any] = {
        "job": job.id,
        "owner": job.owner,
        "notebook": job.notebook,
        "state": job.state.value,
        **extra,
    }
    if job.attempt > 1:
        data["attempt"] = job.attempt
    if job.schedule_id is not None:
        data["schedule_id"] = job.schedule_id
    if job.state.terminal:
        data["error"] = job.error.to_dict() if job.error else None
        data["duration_s"] = job.duration_s
        data["report_url"] = job.report_url
        data["steps"] = job.step_results
    return Event(kind or STATE_EVENT[job.state], data)


def job_streams(event: Event) -> list[str]:
    """The streams a job's event goes to: its owner's and the job's own."""
    owner, job = event.data.get("owner"), event.data.get("job")
    return ([f"user:{owner}"] if owner else []) + ([f"job:{job}"] if job is not None else [])


def worker_id(settings: Settings) -> str:
    """The id this process claims jobs under: its machine, its pid and a random part (pids are reused)."""
    return f"{settings.node_name}:{os.getpid()}:{secrets.token_hex(3)}"


class JobRecorder:
    def __init__(self, settings: Settings, store: JobStore, worker: str, *, leased: bool = False):
        self.settings = settings
        self.store = store
        self.worker = worker  # the id under which this process claims and saves jobs
        # Jobs on leases (`nbrelay worker`): another worker may take one over, so a run's events go out only
        # while the job is still this process's, read again at most every _OWNERSHIP_CHECK_S.
        self.leased = leased
        self._owned_at: dict[int, float] = {}
        self._disowned: set[int] = set()  # jobs found not ours any more: their runs' events are dropped
        self.workspace = Workspace(settings.workspace)
        self.listeners: list[Listener] = []
        # Owners of running jobs: a progress or output event then costs no read of the job's row.
        self._owners: dict[int, str] = {}
        self._finishing: dict[int, asyncio.Task[None]] = {}  # jobs whose post-run steps are running
        # How a change that post-run steps made to the workspace is announced: announce_file(stream, data of
        # its file.changed event); set by whoever publishes (the push service, a worker's hub).
        self.announce_file: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None

    async def publish(self, event: Event) -> None:
        for listener in list(self.listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("event listener failed on %s", event.type)

    # what a run needs ------------------------------------------------------------------------------------------
    def report_paths(self, job: Job) -> tuple[Path, Path]:
        """Where the job's HTML report and executed notebook go: reports/<job id>/<notebook name>.{html,ipynb}."""
        folder = self.settings.reports_dir / str(job.id)
        stem = job.notebook.rsplit("/", 1)[-1].removesuffix(".ipynb") or "notebook"
        return folder / f"{stem}.html", folder / f"{stem}.ipynb"

    def spec_for(self, job: Job) -> RunSpec:
        report_path, output_path = self.report_paths(job)
        return RunSpec(
            job_id=job.id,
            notebook_path=self.workspace.resolve(job.notebook),
            kernel_name=job.kernel_name,
            parameters=job.parameters,
            report_path=report_path,
            output_path=output_path,
            timeout_s=job.timeout_s,
            cell_timeout_s=job.cell_timeout_s,
            interrupt_grace_s=self.settings.interrupt_grace_s,
            output_throttle_s=self.settings.output_throttle_s,
            output_max_chars=self.settings.output_max_chars,
            cell_output_max_chars=self.settings.cell_output_max_chars,
            job_output_max_chars=self.settings.job_output_max_chars,
            kernel_memory_max_mb=self.settings.kernel_memory_max_mb,
        )

    async def spec_or_fail(self, job: Job) -> RunSpec | None:
        """The run spec of a job just claimed, or None after failing the job when its notebook's path is no
        longer acceptable (moved out of the workspace since it was queued, say)."""
        try:
            return self.spec_for(job)
        except Exception as exc:
            await self.finish(job, JobState.FAILED, {"reason": str(exc)}, False)
            return None

    # runner events -------------------------------------------------------------------------------------------
    async def on_event(self, event: Event) -> None:
        """One event of a running job, in order: record it, then tell the listeners."""
        job_id = event.job_id
        assert job_id is not None
        if event.type in TERMINAL_EVENTS:
            self._owners.pop(job_id, None)
            self._owned_at.pop(job_id, None)
            self._disowned.discard(job_id)
            job = await self._stubbornly(f"read job {job_id} to record its end", lambda: self.store.get_job(job_id))
            if job is not None and job.state is JobState.RUNNING and job.worker == self.worker:
                finish = self.finish(
                    job, EVENT_STATE[event.type], event.data.get("error"), bool(event.data.get("report"))
                )
                if job.steps:  # file steps may take long: other jobs' events go on meanwhile
                    task = self._finishing[job_id] = asyncio.create_task(finish, name=f"finish-{job_id}")
                    task.add_done_callback(lambda _t: self._finishing.pop(job_id, None))
                else:
                    await finish
            return
        if not await self._still_ours(job_id):
            return
        owner = self._owners.get(job_id)
        if owner is None or event.type in ("job.starting", "job.started"):
            job = await self.store.get_job(job_id)
            if job is None:
                return
            owner = self._owners[job_id] = job.owner
            if event.type == "job.starting":  # running, no cell counted yet: its kernel is starting
                await self.publish(job_event(job, "job.starting", kernel=event.data.get("kernel"), phase=job.phase))
                return
            if event.type == "job.started":
                await self.store.update_progress(job_id, 0, int(event.data.get("total", 0)))
                job = replace(job, progress_total=int(event.data.get("total", 0)))
                await self.publish(job_event(job, "job.started", total=job.progress_total, phase=job.phase))
                return
        if event.type == "job.progress":
            await self.store.update_progress(job_id, int(event.data["cell"]), int(event.data["total"]))
        await self.publish(replace(event, data={**event.data, "owner": owner}))

    def disown(self, job_id: int) -> None:
        """The job is no longer this process's (its lease went to another worker): drop its run's events."""
        self._disowned.add(job_id)

    async def _still_ours(self, job_id: int) -> bool:
        """Whether a run's event may go out: on leases, the job is still running here as the store says (found
        from outside: a worker frozen past its lease published its run's events on waking, beside the next
        attempt's and after its end)."""
        if job_id in self._disowned:
            return False
        if not self.leased or time.monotonic() - self._owned_at.get(job_id, -_OWNERSHIP_CHECK_S) < _OWNERSHIP_CHECK_S:
            return True
        job = await self.store.get_job(job_id)
        if job is None or job.state is not JobState.RUNNING or job.worker != self.worker:
            self._disowned.add(job_id)
            return False
        self._owned_at[job_id] = time.monotonic()
        return True

    async def finished(self, job_id: int) -> None:
        """Wait for the job's post-run steps, if they are still running."""
        task = self._finishing.get(job_id)
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    async def drain(self) -> None:
        """Wait for every job's post-run steps under way."""
        await asyncio.gather(*self._finishing.values(), return_exceptions=True)

    async def finish(self, job: Job, state: JobState, error: dict[str, Any] | None, report: bool) -> None:
        report_path, output_path = self.report_paths(job)
        done = transition(
            job,
            state,
            error=JobError.from_dict(error),
            report_path=str(report_path) if report else None,
            output_path=str(output_path) if report else None,
            lease_expires_at=None,
        )
        if not report:  # the run died before it could write one (pool: a worker process died or was killed)
            done = await self._partial_report(done)
            report = done.report_path is not None
        if done.steps:
            # Before the final state is saved, so whoever sees the job finished finds its files in place. Step
            # failures show in step_results only: they never change the job's state. The job does not record
            # whether its owner is an admin, so steps keep to the owner's own areas.
            changed: list[dict[str, Any]] = []
            try:
                results = await asyncio.to_thread(
                    run_steps,
                    done.steps,
                    job=done,
                    workspace=self.workspace,
                    report_path=report_path if report else None,
                    output_path=output_path if report else None,
                    succeeded=state is JobState.SUCCEEDED,
                    areas=Areas.for_user(self.settings, done.owner, admin=False),
                    changed=changed,
                )
            except Exception as exc:
                log.exception("steps of job %s", job.id)
                results = [{"step": None, "status": "failed", "files": [], "error": f"steps did not run: {exc}"}]
            await self._announce_changes(changed)
            done = replace(done, step_results=results)
        saved = await self._stubbornly(
            f"record the end of job {job.id}",
            lambda: self.store.save(done, expect_state=JobState.RUNNING, expect_worker=job.worker),
        )
        if saved:
            await self.publish(job_event(done))

    async def _stubbornly(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, again and again until the store takes it: a job's end is never dropped for a database that
        refuses for a while (found from outside: a SQLite write lock held 15 s, a full disk, or PostgreSQL away
        for 30 s as a run ended left its job running for good; on a worker machine, its slot with it). Each
        try is one line of log; the waits grow to _RETRY_MAX_S."""
        wait = _RETRY_FIRST_S
        while True:
            try:
                return await call()
            except Exception as exc:
                if isinstance(exc, NbrelayError) or not is_outage(exc):
                    raise  # a refusal of ours, or a bug: trying again changes nothing
                log.warning("could not %s (%s); trying again in %.2g s", what, reason_of(exc), wait)
                await asyncio.sleep(wait)
                wait = min(wait * 2, _RETRY_MAX_S)

    async def _announce_changes(self, changed: list[dict[str, Any]]) -> None:
        """What post-run steps changed in the workspace, told as every change there is: a file.changed event to
        whoever sees the path (found from outside: a report published to shared/ showed on no one's page)."""
        if self.announce_file is None:
            return
        for data in changed:
            try:
                await self.announce_file(change_stream(self.settings, data["path"]), data)
            except Exception:
                log.exception("file.changed for %s not announced", data["path"])

    async def end(self, job: Job, state: JobState, reason: str) -> Job | None:
        """End a running job that no runner will report on (its worker died or the server restarted), with a
        partial report when its notebook can still be read."""
        done = transition(job, state, error=JobError(reason=reason), lease_expires_at=None)
        done = await self._partial_report(done)
        if await self.store.save(done, expect_state=JobState.RUNNING, expect_worker=job.worker):
            await self.publish(job_event(done))
            return done
        return None

    async def _partial_report(self, job: Job) -> Job:
        """`job`, ended without its runner's report, with a partial one written; unchanged when none could be."""
        # The report stack (nbconvert) is imported the first time one is needed, not at every server start.
        from nbrelay.runner.partial import write_partial_report

        try:
            spec = self.spec_for(job)
            await asyncio.to_thread(
                write_partial_report,
                job,
                notebook_path=spec.notebook_path,
                html_path=spec.report_path,
                ipynb_path=spec.output_path,
            )
        except Exception as exc:  # the job ends all the same, only without a report
            log.warning("job %s ends without a report: its partial report could not be written: %s", job.id, exc)
            return job
        return replace(job, report_path=str(spec.report_path), output_path=str(spec.output_path))

    async def requeue(self, job: Job, reason: str) -> Job | None:
        """Put a running job whose worker was lost back in the queue as a new attempt (event job.requeued)."""
        again = transition(job, JobState.QUEUED)
        if await self.store.save(again, expect_state=JobState.RUNNING, expect_worker=job.worker):
            await self.publish(job_event(again, "job.requeued", reason=reason, lost_worker=job.worker))
            return again
        return None
