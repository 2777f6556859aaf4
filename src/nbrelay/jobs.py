"""The job service: submit (validate, persist, enqueue), cancel, list, recover on start, and turn executor events
into state transitions before anyone hears of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nbrelay.config import Settings
from nbrelay.errors import Forbidden, NotFound, Unprocessable
from nbrelay.executor.base import Executor
from nbrelay.files import Areas, Workspace
from nbrelay.models import (
    EVENT_STATE,
    STATE_EVENT,
    TERMINAL_EVENTS,
    Event,
    Job,
    JobError,
    JobState,
    transition,
)
from nbrelay.notebooks import KernelNames, NotebookInfo, read_notebook
from nbrelay.runner.execute import RunSpec
from nbrelay.runner.params import check_parameters
from nbrelay.steps import read_notebook_steps, run_steps, validate_steps
from nbrelay.store.base import JobStore, NewJob

log = logging.getLogger(__name__)

Listener = Callable[[Event], Awaitable[None]]
RESTART_REASON = "interrupted: server restarted"


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False

    def may_see(self, job: Job) -> bool:
        return self.admin or job.owner == self.name


@dataclass(frozen=True)
class SubmitRequest:
    notebook: str
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    cell_timeout_s: float | None = None
    kernel_name: str | None = None
    # Post-run file steps (nbrelay.steps); None: the notebook's metadata.nbrelay.steps, [] for none at all.
    steps: list[dict[str, Any]] | None = None


def job_event(job: Job, kind: str | None = None, **extra: Any) -> Event:
    """The event announcing `job`'s current state (or `kind`), with what a client needs to show it."""
    data: dict[str, Any] = {
        "job": job.id,
        "owner": job.owner,
        "notebook": job.notebook,
        "state": job.state.value,
        **extra,
    }
    if job.state.terminal:
        data["error"] = job.error.to_dict() if job.error else None
        data["duration_s"] = job.duration_s
        data["report_url"] = f"/api/jobs/{job.id}/report" if job.report_path else None
        data["steps"] = job.step_results
    return Event(kind or STATE_EVENT[job.state], data)


class JobService:
    def __init__(self, settings: Settings, store: JobStore, executor: Executor):
        self.settings = settings
        self.store = store
        self.executor = executor
        self.workspace = Workspace(settings.workspace)
        self.kernels = KernelNames()
        self.listeners: list[Listener] = []
        # Owners of running jobs: a progress or output event then costs no read of the job's row.
        self._owners: dict[int, str] = {}
        self._finishing: set[asyncio.Task[None]] = set()  # jobs whose post-run steps are running
        self._dispatch_lock = asyncio.Lock()
        self._dispatch_wanted = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._terminal_seen: dict[int, asyncio.Event] = {}

    # life cycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await self.recover()
        await asyncio.to_thread(self.kernels.known)  # the first submit should not pay for the kernel scan
        await self.executor.start(self._on_executor_event)
        await self.dispatch()
        self._dispatcher = asyncio.create_task(self._dispatch_forever())

    async def stop(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
        await asyncio.gather(*self._finishing, return_exceptions=True)  # steps already under way end first
        await self.executor.stop()

    async def recover(self) -> None:
        """Jobs a dead server left running cannot be resumed: they fail, and say why. Queued jobs stay queued."""
        for job in await self.store.jobs_in_state(JobState.RUNNING):
            failed = transition(job, JobState.FAILED, error=JobError(reason=RESTART_REASON))
            if await self.store.save(failed, expect_state=JobState.RUNNING):
                await self._publish(job_event(failed))

    # listeners ---------------------------------------------------------------------------------------------
    async def _publish(self, event: Event) -> None:
        for listener in list(self.listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("event listener failed on %s", event.type)
        if event.type in TERMINAL_EVENTS and event.job_id is not None:
            waiter = self._terminal_seen.pop(event.job_id, None)
            if waiter is not None:
                waiter.set()

    async def wait(self, job_id: int, timeout_s: float | None = None) -> Job:
        """Wait until the job is finished and return it (for the CLI's --local mode and tests)."""
        waiter = self._terminal_seen.setdefault(job_id, asyncio.Event())
        job = await self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id}", code="job_not_found")
        if not job.state.terminal:
            await asyncio.wait_for(waiter.wait(), timeout_s)
            job = await self.store.get_job(job_id)
            assert job is not None
        return job

    # submit ------------------------------------------------------------------------------------------------
    def inspect(self, user_path: str, user: User | None = None) -> NotebookInfo:
        """Read and check the notebook; with `user`, only one in that user's areas of the workspace."""
        if user is not None:
            areas = Areas.for_user(self.settings, user.name, admin=user.admin)
            rel = self.workspace.lexical(self.workspace.resolve(user_path))
            if not areas.can_read(rel):
                raise NotFound(f"no notebook at {user_path}", code="notebook_not_found")
        info, _nb = read_notebook(self.workspace, user_path, self.kernels)
        return info

    def _timeout(self, given: float | None, default: float | None, what: str) -> float | None:
        value = given if given is not None else default
        if value is not None and not (0 < value <= self.settings.max_timeout_s):
            raise Unprocessable(
                f"{what} must be between 0 and {self.settings.max_timeout_s:g} seconds, got {value:g}",
                code="invalid_timeout",
            )
        return value

    async def submit(self, user: User, request: SubmitRequest) -> Job:
        info = await asyncio.to_thread(self.inspect, request.notebook, user)
        kernel_name = request.kernel_name or info.kernel_name
        await asyncio.to_thread(self.kernels.check, kernel_name)
        check_parameters(info.parameters, request.parameters)
        if request.steps is None:
            defaults = await asyncio.to_thread(read_notebook_steps, info.absolute)
            steps = validate_steps(
                defaults, parameters=request.parameters, origin=f"{info.path} metadata.nbrelay.steps"
            )
        else:
            steps = validate_steps(request.steps, parameters=request.parameters)
        new = NewJob(
            owner=user.name,
            notebook=info.path,
            kernel_name=kernel_name,
            parameters=dict(request.parameters),
            timeout_s=self._timeout(request.timeout_s, self.settings.default_timeout_s, "timeout_s"),
            cell_timeout_s=self._timeout(
                request.cell_timeout_s, self.settings.default_cell_timeout_s, "cell_timeout_s"
            ),
            steps=steps,
        )
        job = await self.store.add_job(new)
        await self._publish(job_event(job))
        self.kick()
        return job

    # read --------------------------------------------------------------------------------------------------
    async def get(self, user: User, job_id: int) -> Job:
        job = await self.store.get_job(job_id)
        if job is None or not user.may_see(job):
            # Someone else's job answers like a missing one: its existence is not ours to tell.
            raise NotFound(f"no job {job_id}", code="job_not_found")
        return job

    async def list(
        self,
        user: User,
        *,
        states: Sequence[JobState] | None = None,
        notebook: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[Sequence[Job], int]:
        owner = None if user.admin else user.name
        jobs = await self.store.list_jobs(owner=owner, states=states, notebook=notebook, limit=limit, offset=offset)
        total = await self.store.count_jobs(owner=owner, states=states, notebook=notebook)
        return jobs, total

    async def with_positions(self, jobs: Sequence[Job]) -> Sequence[tuple[Job, int | None]]:
        """Each job with its queue position, state and position agreeing.

        Positions are read after the jobs: a job listed as queued but no longer in the queue was dispatched or
        cancelled in between, so it is read again rather than shown as queued without a position.
        """
        if not any(job.state is JobState.QUEUED for job in jobs):
            return [(job, None) for job in jobs]
        queued = await self.store.oldest_queued(limit=100_000)
        positions = {job.id: i + 1 for i, job in enumerate(queued)}
        result: list[tuple[Job, int | None]] = []
        for job in jobs:
            if job.state is JobState.QUEUED and job.id not in positions:
                job = await self.store.get_job(job.id) or job
            result.append((job, positions.get(job.id) if job.state is JobState.QUEUED else None))
        return result

    # cancel ------------------------------------------------------------------------------------------------
    async def cancel(self, user: User, job_id: int) -> Job:
        job = await self.get(user, job_id)
        if job.state is JobState.QUEUED:
            cancelled = transition(
                job, JobState.CANCELLED, cancel_requested=True, error=JobError("cancelled by request")
            )
            if await self.store.save(cancelled, expect_state=JobState.QUEUED):
                await self._publish(job_event(cancelled))
                return cancelled
            job = await self.get(user, job_id)  # dispatched meanwhile: cancel it as a running job
        if job.state is JobState.RUNNING:
            await self.store.set_cancel_requested(job_id)
            await self.executor.cancel(job_id)
            return replace(job, cancel_requested=True)
        if job.state.terminal:
            return job
        raise Forbidden(f"job {job_id} cannot be cancelled in state {job.state.value}")

    # dispatch ----------------------------------------------------------------------------------------------
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
        )

    def kick(self) -> None:
        """Ask for a dispatch pass; kicks while one is pending coalesce into one more pass."""
        self._dispatch_wanted.set()

    async def _dispatch_forever(self) -> None:
        while True:
            await self._dispatch_wanted.wait()
            self._dispatch_wanted.clear()
            try:
                await self.dispatch()
            except Exception:
                log.exception("dispatch failed; retrying on the next event")

    async def dispatch(self) -> None:
        """Hand queued jobs, oldest first, to free executor slots; the store decides who runs (compare-and-set)."""
        async with self._dispatch_lock:
            while (free := self.executor.free_slots()) > 0:
                queued = await self.store.oldest_queued(limit=free)
                if not queued:
                    return
                for job in queued:
                    running = transition(job, JobState.RUNNING)
                    if await self.store.save(running, expect_state=JobState.QUEUED):
                        try:
                            spec = self.spec_for(running)
                        except Exception as exc:  # the notebook's path is no longer acceptable
                            await self._finish(running, JobState.FAILED, {"reason": str(exc)}, False)
                            continue
                        await self.executor.run(spec)

    # executor events ---------------------------------------------------------------------------------------
    async def _on_executor_event(self, event: Event) -> None:
        job_id = event.job_id
        assert job_id is not None
        if event.type in TERMINAL_EVENTS:
            self._owners.pop(job_id, None)
            job = await self.store.get_job(job_id)
            if job is not None and job.state is JobState.RUNNING:
                finish = self._finish(
                    job, EVENT_STATE[event.type], event.data.get("error"), bool(event.data.get("report"))
                )
                if job.steps:  # file steps may take long: other jobs' events go on meanwhile
                    task = asyncio.create_task(finish, name=f"finish-{job_id}")
                    self._finishing.add(task)
                    task.add_done_callback(self._finishing.discard)
                else:
                    await finish
            self.kick()
            return
        owner = self._owners.get(job_id)
        if owner is None or event.type == "job.started":
            job = await self.store.get_job(job_id)
            if job is None:
                return
            owner = self._owners[job_id] = job.owner
            if event.type == "job.started":
                await self.store.update_progress(job_id, 0, int(event.data.get("total", 0)))
                job = replace(job, progress_total=int(event.data.get("total", 0)))
                await self._publish(job_event(job, "job.started", total=job.progress_total))
                return
        if event.type == "job.progress":
            await self.store.update_progress(job_id, int(event.data["cell"]), int(event.data["total"]))
        await self._publish(replace(event, data={**event.data, "owner": owner}))

    async def _finish(self, job: Job, state: JobState, error: dict[str, Any] | None, report: bool) -> None:
        report_path, output_path = self.report_paths(job)
        done = transition(
            job,
            state,
            error=JobError.from_dict(error),
            report_path=str(report_path) if report else None,
            output_path=str(output_path) if report else None,
        )
        if done.steps:
            # Before the final state is saved, so whoever sees the job finished finds its files in place. Step
            # failures show in step_results only: they never change the job's state. The job does not record
            # whether its owner is an admin, so steps keep to the owner's own areas.
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
                )
            except Exception as exc:
                log.exception("steps of job %s", job.id)
                results = [{"step": None, "status": "failed", "files": [], "error": f"steps did not run: {exc}"}]
            done = replace(done, step_results=results)
        if await self.store.save(done, expect_state=JobState.RUNNING):
            await self._publish(job_event(done))
