"""The executor interface: run a job on a free slot, cancel it, and report everything as Events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from nbrelay.models import Event
from nbrelay.runner.execute import RunSpec

# Called for every event of a job, in order, one at a time; terminal events carry the outcome in `data`.
OnEvent = Callable[[Event], Awaitable[None]]


class Executor(Protocol):
    async def start(self, on_event: OnEvent) -> None: ...

    async def stop(self) -> None: ...

    def free_slots(self) -> int:
        """How many more jobs `run` accepts right now."""

    def running(self) -> set[int]:
        """Ids of the jobs this executor is running."""

    async def run(self, spec: RunSpec) -> None:
        """Start the job on a free slot (the caller checked `free_slots`)."""

    async def cancel(self, job_id: int) -> None:
        """Stop a running job: interrupt, then kill after the grace period; ends with a job.cancelled event."""
