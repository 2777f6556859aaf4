"""The store interface: what the job service needs from a database, nothing more."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
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
    steps: list[dict[str, Any]] = field(default_factory=list)  # validated post-run steps (nbrelay.steps)
    schedule_id: int | None = None  # the schedule that started it (nbrelay.schedules)


# The largest id and offset the stores take: PostgreSQL's INTEGER (ids are INTEGER columns on both backends).
MAX_ID = 2**31 - 1
USER_NAME_MAX = 128
TOKEN_HASH_MAX = 128
_USER_NAME = re.compile(r"[A-Za-z0-9_.@+-]+")


def check_user_name(name: str) -> str:
    """`name` if it is a valid user name (1-128 of A-Z a-z 0-9 _ . @ + -), else ValueError."""
    # "." and ".." are refused too: a user name becomes a folder name (users/<name>).
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= USER_NAME_MAX
        or not _USER_NAME.fullmatch(name)
        or name in (".", "..")
    ):
        shown = repr(name[:40] + "…" if isinstance(name, str) and len(name) > 40 else name)
        raise ValueError(
            f"invalid user name {shown}: use 1 to {USER_NAME_MAX} characters from A-Z, a-z, 0-9 and _ . @ + -"
        )
    return name


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """A stored API token: only the caller's hash of it, never the token itself."""

    id: int
    name: str
    token_hash: str
    admin: bool
    created_at: datetime
    last_used_at: datetime | None


class JobStore(Protocol):
    async def start(self) -> None:
        """Connect and bring the schema up to date (migrations)."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return once the database answers a query; raise (an OSError or the driver's error) when it does not."""

    async def add_job(self, new: NewJob) -> Job:
        """Insert a queued job and return it with its id."""

    async def get_job(self, job_id: int) -> Job | None: ...

    async def get_jobs(self, job_ids: Iterable[int]) -> Sequence[Job]:
        """The jobs with these ids that exist, read in one statement (so their states agree with each other)."""

    async def list_jobs(
        self,
        *,
        owner: str | None = None,
        states: Iterable[JobState] | None = None,
        notebook: str | None = None,
        schedule_id: int | None = None,
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
        schedule_id: int | None = None,
    ) -> int: ...

    async def save(self, job: Job, *, expect_state: JobState, expect_worker: str | None = None) -> bool:
        """Write `job` only if the stored row is still in `expect_state` (compare-and-set), and with
        `expect_worker`, only while that worker holds the job. True if written."""

    # Leases: who runs a job. A claim is one conditional UPDATE, so of several claimers exactly one wins.

    async def claim(self, worker: str, *, lease_s: float | None, job_id: int | None = None) -> Job | None:
        """Move the oldest queued job (or job `job_id`, if still queued) to running for `worker`, with a lease
        of `lease_s` seconds (None: no lease). The claimed job, or None when there was nothing to claim."""

    async def renew_leases(self, worker: str, job_ids: Iterable[int], *, lease_s: float) -> dict[int, bool]:
        """Extend the leases `worker` still holds among `job_ids`: {job id: cancel requested} for each of those;
        a job missing from the answer is no longer this worker's (its lease ran out and it was reaped)."""

    async def expired_leases(self, *, limit: int = 100) -> Sequence[Job]:
        """Running jobs whose lease has run out (their worker is lost), oldest first."""

    async def update_progress(self, job_id: int, cell: int, total: int) -> None:
        """Record progress of a running job (no state change)."""

    async def set_cancel_requested(self, job_id: int) -> None: ...

    async def oldest_queued(self, limit: int) -> Sequence[Job]:
        """Queued jobs in FIFO order (oldest first)."""

    async def queue_positions(self, job_ids: Iterable[int]) -> dict[int, int]:
        """{job id: 1-based position among queued jobs} for those of `job_ids` that are queued, read at one
        moment."""

    async def jobs_in_state(self, state: JobState) -> Sequence[Job]: ...

    # Report history: jobs whose report is still recorded (report_path not NULL).

    async def list_reports(
        self,
        *,
        notebook: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Sequence[Job]:
        """Jobs that have a report, newest (highest id) first, of one notebook and/or owner or of all."""

    async def count_reports(self, *, notebook: str | None = None, owner: str | None = None) -> int:
        """How many jobs `list_reports` would give without limit and offset."""

    async def clear_report(self, job_id: int) -> Job | None:
        """Forget the job's report: set report_path and output_path to NULL (files are the caller's business).

        The updated job, or None when there is no such job.
        """

    # API tokens (auth mode `token`). The caller hashes; the store never sees a raw token.

    async def add_token(self, name: str, token_hash: str, *, admin: bool = False) -> TokenRecord:
        """Store a token hash for user `name`.

        ValueError for an invalid user name (see `check_user_name`), an empty or over-long hash,
        or a hash that is already stored (hashes are unique).
        """

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash, or None."""

    async def touch_token(self, token_id: int) -> None:
        """Set last_used_at to now (UTC); nothing for an unknown id."""

    async def list_tokens(self, name: str | None = None) -> Sequence[TokenRecord]:
        """Tokens oldest first, of one user or of everyone."""

    async def delete_tokens(self, name: str) -> int:
        """Delete every token of user `name`; how many there were."""
