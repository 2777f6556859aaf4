"""The executor interface: what the job service asks of whatever runs its queued jobs.

An executor claims queued jobs from the store (one conditional UPDATE, so each job runs once), runs them, and
records their events through the JobRecorder (store first, then push). `local` does that in this process with
worker processes of its own; `celery` has workers on other machines do it, told by Celery that jobs wait.
"""

from __future__ import annotations

from typing import Protocol

from nbrelay.models import Job


class Executor(Protocol):
    name: str

    async def start(self) -> None:
        """Take up the queue: jobs that were queued before the start run too."""

    async def stop(self) -> None:
        """Stop taking jobs; what this process runs itself ends (failed: interrupted) or finishes first."""

    def queued(self, job: Job) -> None:
        """`job` entered the queue (submitted, or re-queued after its worker was lost)."""

    async def cancel(self, job_id: int) -> None:
        """The store already says cancel_requested for this running job: make the cancel reach its run, which
        ends with a job.cancelled event (interrupt, then kill after the grace period)."""

    async def ping(self) -> None:
        """Return when jobs can be handed on now (what the executor needs answers); raise, saying what does not."""

    async def slots(self) -> int:
        """How many jobs can run at once now (the concurrency cap): worker processes here, or the slots of the
        live workers."""
