"""The job service: submit (validate, persist, enqueue), cancel, list and wait, as people and the API see jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nbrelay.config import Settings
from nbrelay.errors import NotFound, PayloadTooLarge, Unprocessable
from nbrelay.executor.base import Executor
from nbrelay.files import Areas, Workspace
from nbrelay.metrics import JobFigures
from nbrelay.models import TERMINAL_EVENTS, Event, Job, JobError, JobState, compact_json, transition
from nbrelay.notebooks import KernelNames, NotebookInfo, read_notebook
from nbrelay.recorder import JobRecorder, Listener, job_event, worker_id
from nbrelay.runner.params import check_parameters, default_value
from nbrelay.steps import fill_fields, read_notebook_steps, validate_steps
from nbrelay.store.base import MAX_ID, JobStore, NewJob

__all__ = ["JobService", "SubmitRequest", "User", "job_event", "open_job_service"]

log = logging.getLogger(__name__)
_SLOTS_TTL_S = 30.0


@dataclass(frozen=True)
class User:
    name: str
    admin: bool = False
    # How the user proved who they are, when that can be checked again later (a token, a session cookie): the
    # Authenticator reads it to end a live connection whose token was revoked. None: nothing to check again.
    proof: Hashable | None = field(default=None, compare=False, repr=False)

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
    schedule_id: int | None = None  # set by the scheduler: the schedule whose tick (or run now) this is


def open_job_service(settings: Settings, store: JobStore) -> JobService:
    """The job service with the recorder and the executor the settings choose (open_executor picks it)."""
    from nbrelay.executor import open_executor

    recorder = JobRecorder(settings, store, worker_id(settings))
    return JobService(settings, store, recorder, open_executor(settings, store, recorder))


class JobService:
    """The jobs as people and the API see them. Running them is the executor's; recording what runs say is
    the recorder's (both made by open_job_service)."""

    def __init__(self, settings: Settings, store: JobStore, recorder: JobRecorder, executor: Executor):
        self.settings = settings
        self.store = store
        self.recorder = recorder
        self.executor = executor
        self.workspace = Workspace(settings.workspace)
        self.kernels = KernelNames()
        self._terminal_seen: dict[int, asyncio.Event] = {}
        self._slots_read_at = float("-inf")
        recorder.listeners.append(self._on_event)

    @property
    def listeners(self) -> list[Listener]:
        """Called with every job event, after the store has it."""
        return self.recorder.listeners

    # life cycle --------------------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.kernels.known)  # the first submit should not pay for the kernel scan
        await self.executor.start()

    async def stop(self) -> None:
        await self.executor.stop()

    async def _on_event(self, event: Event) -> None:
        if event.type in TERMINAL_EVENTS and event.job_id is not None:
            waiter = self._terminal_seen.pop(event.job_id, None)
            if waiter is not None:
                waiter.set()

    async def wait(self, job_id: int, timeout_s: float | None = None) -> Job:
        """Wait until the job is finished and return it (for the CLI's --local mode and tests). Jobs that run
        elsewhere end without this process hearing it: the store is read again every second too."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while True:
            waiter = self._terminal_seen.setdefault(job_id, asyncio.Event())
            job = await self.store.get_job(job_id)
            if job is None:
                raise NotFound(f"no job {job_id}", code="job_not_found")
            if job.state.terminal:
                return job
            left = 1.0 if deadline is None else min(1.0, deadline - loop.time())
            if left <= 0:
                raise TimeoutError(f"job {job_id} did not finish within {timeout_s} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):  # not wait_for, which may swallow a cancel (Python 3.11)
                    await waiter.wait()

    async def figures(self, figures: JobFigures) -> None:
        """Bring the job figures up to date for /metrics: the queue and running jobs from the store, the cap
        and the executor's own counts."""
        figures.queued = await self.store.count_jobs(states=[JobState.QUEUED])
        figures.running = await self.store.count_jobs(states=[JobState.RUNNING])
        now = asyncio.get_running_loop().time()
        if now - self._slots_read_at > _SLOTS_TTL_S:  # asking the workers takes a broadcast round trip
            self._slots_read_at = now
            with contextlib.suppress(Exception):
                figures.slots = await self.executor.slots()
        figures.lease_expiries = getattr(self.executor, "lease_expiries", 0)
        figures.requeues = getattr(self.executor, "requeues", 0)

    # submit ------------------------------------------------------------------------------------------------
    def inspect(self, user_path: str, user: User | None = None, kernel_name: str | None = None) -> NotebookInfo:
        """Read and check the notebook; with `user`, only one in that user's areas of the workspace; `kernel_name`:
        the kernel asked for, else the notebook's."""
        if user is not None:
            areas = Areas.for_user(self.settings, user.name, admin=user.admin)
            rel = self.workspace.lexical(self.workspace.resolve(user_path))
            if not areas.can_read(rel):
                raise NotFound(f"no notebook at {user_path}", code="notebook_not_found")
        info, _nb = read_notebook(
            self.workspace, user_path, self.kernels, kernel_name, max_cells=self.settings.max_notebook_cells
        )
        return info

    def _checked(self, user: User, request: SubmitRequest) -> tuple[NotebookInfo, list[dict[str, Any]]]:
        """The notebook of a submit, read and checked, and its steps (asked for, else the notebook's own)."""
        size = len(compact_json(request.parameters).encode())
        if size > self.settings.max_parameters_bytes:
            raise PayloadTooLarge(
                f"the parameters are {size} bytes as JSON; the limit is {self.settings.max_parameters_bytes}",
                code="parameters_too_large",
                hint="pass a path to a file in the workspace instead of its content",
            )
        info = self.inspect(request.notebook, user, request.kernel_name)
        self.kernels.check(info.kernel_name)
        check_parameters(info.parameters, request.parameters)
        # Parameters not given keep the notebook's defaults: a step's field may name them (found from outside: a
        # notebook whose own steps named one of its parameters could not be run with its defaults).
        defaults = {
            p.name: value
            for p in info.parameters or []
            if p.name not in request.parameters and (value := default_value(p)) is not None
        }
        names = [*request.parameters, *defaults]
        if request.steps is None:
            raw = read_notebook_steps(info.absolute)
            steps = validate_steps(raw, parameters=names, origin=f"{info.path} metadata.nbrelay.steps")
        else:
            steps = validate_steps(request.steps, parameters=names)
        return info, fill_fields(steps, defaults)

    def _timeout(self, given: float | None, default: float | None, what: str) -> float | None:
        value = given if given is not None else default
        if value is not None and not (0 < value <= self.settings.max_timeout_s):
            raise Unprocessable(
                f"{what} must be between 0 and {self.settings.max_timeout_s:g} seconds, got {value:g}",
                code="invalid_timeout",
            )
        return value

    async def submit(self, user: User, request: SubmitRequest) -> Job:
        info, steps = await asyncio.to_thread(self._checked, user, request)  # file reads: one trip to a thread
        kernel_name = info.kernel_name
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
            schedule_id=request.schedule_id,
        )
        job = await self.store.add_job(new)
        await self.recorder.publish(job_event(job))
        self.executor.queued(job)
        return job

    # read --------------------------------------------------------------------------------------------------
    async def get(self, user: User, job_id: int) -> Job:
        # An id no store can hold (a WebSocket's job:<18 digits>, say) is simply not there.
        job = await self.store.get_job(job_id) if 1 <= job_id <= MAX_ID else None
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
        schedule_id: int | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[Sequence[Job], int]:
        owner = None if user.admin else user.name
        where: dict[str, Any] = {"owner": owner, "states": states, "notebook": notebook, "schedule_id": schedule_id}
        jobs = await self.store.list_jobs(**where, limit=limit, offset=offset)
        total = await self.store.count_jobs(**where)
        return jobs, total

    async def position(self, job: Job) -> int | None:
        """The queue position of `job` as read (None unless it is queued: nothing to ask the store then)."""
        if job.state is not JobState.QUEUED:
            return None
        return (await self.store.queue_positions([job.id])).get(job.id)

    async def with_positions(self, jobs: Sequence[Job]) -> Sequence[tuple[Job, int | None]]:
        """Each job with its queue position, state and position agreeing.

        Positions are read after the jobs: when a job listed as queued is no longer in the queue (dispatched or
        cancelled in between), every listed job is read again, in one statement, so the states shown come from
        one moment (re-reading that job alone could show it running beside a job that has finished meanwhile:
        more jobs running than the cap allows, seen by a test).
        """
        if not any(job.state is JobState.QUEUED for job in jobs):
            return [(job, None) for job in jobs]
        positions = await self.store.queue_positions(job.id for job in jobs if job.state is JobState.QUEUED)
        if any(job.state is JobState.QUEUED and job.id not in positions for job in jobs):
            fresh = {job.id: job for job in await self.store.get_jobs(job.id for job in jobs)}
            jobs = [fresh.get(job.id, job) for job in jobs]
        return [(job, positions.get(job.id) if job.state is JobState.QUEUED else None) for job in jobs]

    # cancel ------------------------------------------------------------------------------------------------
    async def cancel(self, user: User, job_id: int) -> Job:
        job = await self.get(user, job_id)
        if job.state is JobState.QUEUED:
            cancelled = transition(
                job, JobState.CANCELLED, cancel_requested=True, error=JobError("cancelled by request")
            )
            if await self.store.save(cancelled, expect_state=JobState.QUEUED):
                await self.recorder.publish(job_event(cancelled))
                return cancelled
            job = await self.get(user, job_id)  # dispatched meanwhile: cancel it as a running job
        if job.state is JobState.RUNNING:
            await self.executor.cancel(job_id)  # first: the store's write can wait, and cells would start meanwhile
            await self.store.set_cancel_requested(job_id)
            return replace(job, cancel_requested=True)
        return job  # ended already: nothing to do
