"""Schedules: notebooks that run on a cron expression in a time zone.

cron.py (fire times, pure), tick_values.py ({{ tick_date }} in parameters, pure), service.py (what the API and the
CLI do with schedules), loop.py (the scheduler loop on every web node); their rows: nbrelay.store.schedules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nbrelay.jobs import JobService
    from nbrelay.models import Event
    from nbrelay.recorder import Listener
    from nbrelay.schedules.loop import Scheduler
    from nbrelay.schedules.service import ScheduleService

__all__ = ["open_scheduling"]


def open_scheduling(jobs: JobService, announce: Listener | None = None) -> tuple[ScheduleService, Scheduler]:
    """The schedule service and this node's scheduler loop on the job store's database; `announce` gets every
    schedule.* event (push sends them to the owner's stream). Start the loop with `start()`, end it with `stop()`."""
    from nbrelay.models import TERMINAL_EVENTS
    from nbrelay.schedules.loop import Scheduler
    from nbrelay.schedules.service import ScheduleService
    from nbrelay.store.schedules import ScheduleStore
    from nbrelay.store.sql import SqlJobStore

    assert isinstance(jobs.store, SqlJobStore), "schedules live in the SQL job store"
    service = ScheduleService(jobs, ScheduleStore(jobs.store.engine))
    scheduler = Scheduler(service.store, service.start_run, node=jobs.recorder.worker, announce=service.announce_tick)

    async def wake(_event: object) -> None:
        scheduler.wake()

    async def run_ended(event: Event) -> None:
        # A waiting tick (overlap "queue") may start now, rather than at the next poll.
        if event.type in TERMINAL_EVENTS and event.data.get("schedule_id") is not None:
            scheduler.wake()

    service.listeners.append(wake)
    jobs.listeners.append(run_ended)
    if announce is not None:
        service.listeners.append(announce)
    return service, scheduler
