"""The store interface: what the job service needs from a database, nothing more."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from nbrelay.models import Job, JobState


@dataclass(frozen=True, slots=True)
class NewJob:
    owner: str
    notebook: str
    kernel_name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None
    cell_timeout_s: float | None = None


class JobStore(Protocol):
    async def start(self) -> None:
        """Connect and bring the schema up to date (migrations)."""

    async def close(self) -> None: ...

    async def add_job(self, new: NewJob) -> Job:
        """Insert a queued job and return it with its id."""

    async def get_job(self, job_id: int) -> Job | None: ...

    async def list_jobs(
        self,
        *,
        owner: str | None = None,
        states: Iterable[JobState] | None = None,
        notebook: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Sequence[Job]:
        """Jobs newest first."""

    async def count_jobs(
        self,
        *,
        owner: str | None = None,
        states: Iterable[JobState] | None = None,
        notebook: str | None = None,
    ) -> int: ...

    async def save(self, job: Job, *, expect_state: JobState) -> bool:
        """Write `job` only if the stored row is still in `expect_state` (compare-and-set). True if written."""

    async def update_progress(self, job_id: int, cell: int, total: int) -> None:
        """Record progress of a running job (no state change)."""

    async def set_cancel_requested(self, job_id: int) -> None: ...

    async def oldest_queued(self, limit: int) -> Sequence[Job]:
        """Queued jobs in FIFO order (oldest first)."""

    async def queue_position(self, job_id: int) -> int | None:
        """1-based position among queued jobs, None when the job is not queued."""

    async def jobs_in_state(self, state: JobState) -> Sequence[Job]: ...
