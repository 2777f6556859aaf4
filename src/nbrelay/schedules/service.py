"""The schedules as people and the API see them: create, change, pause, run now, delete, each checked like a job
submit and each change announced on the owner's stream (schedule.* events)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from nbrelay.errors import NotFound, Unprocessable
from nbrelay.jobs import JobService, SubmitRequest, User
from nbrelay.models import Event, Job, isoformat, utcnow
from nbrelay.recorder import Listener
from nbrelay.runner.params import check_parameters
from nbrelay.schedules import cron
from nbrelay.schedules.tick_values import check_placeholders, render_parameters
from nbrelay.steps import validate_steps
from nbrelay.store.base import MAX_ID
from nbrelay.store.schedules import Schedule, ScheduleStore, Tick

__all__ = ["MISSED", "NOTIFY_STATES", "OVERLAP", "ScheduleService"]

log = logging.getLogger(__name__)

OVERLAP = ("skip", "queue")  # a tick while the schedule's previous run is unfinished: skipped, or run after it
MISSED = ("run_once", "skip")  # ticks that fell while no node was running: one catch-up run, or none
NOTIFY_STATES = ("succeeded", "failed", "cancelled", "timed_out")
NEXT_RUNS = 5
_ADDRESS = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+")
_MAX_ADDRESSES = 20
# Changing these changes which ticks are owed: ticks are counted afresh from the change.
_TICK_FIELDS = ("cron", "timezone", "enabled")


def _unprocessable(field: str, message: str, code: str) -> Unprocessable:
    return Unprocessable(message, code=code, field=field)


class ScheduleService:
    def __init__(self, jobs: JobService, store: ScheduleStore):
        self.jobs = jobs
        self.store = store
        self.settings = jobs.settings
        self.listeners: list[Listener] = []  # called with every schedule.* event (push adds its own)

    async def publish(self, event: Event) -> None:
        for listener in list(self.listeners):
            try:
                await listener(event)
            except Exception:
                log.exception("schedule event listener failed on %s", event.type)

    # checks ------------------------------------------------------------------------------------------------
    async def _checked(self, schedule: Schedule) -> Schedule:
        """`schedule` with its cron in five fields and its notebook path as the workspace names it, or a 422
        (404 for a notebook its owner cannot read) naming what is wrong, as a job submit would.

        The notebook is checked as its owner's runs will read it: within the owner's own areas, admin or not (a
        schedule does not record whether its owner is an admin, as a job does not)."""
        try:
            fields = cron.normalize(schedule.cron)
            tz = cron.zone(schedule.timezone)
        except cron.CronError as exc:
            raise _unprocessable(exc.field, str(exc), f"invalid_{exc.field}") from None
        if schedule.overlap not in OVERLAP:
            raise _unprocessable("overlap", f"overlap must be one of {', '.join(OVERLAP)}", "invalid_overlap")
        if schedule.missed not in MISSED:
            raise _unprocessable("missed", f"missed must be one of {', '.join(MISSED)}", "invalid_missed")
        for what in ("timeout_s", "cell_timeout_s"):
            value = getattr(schedule, what)
            if value is not None and not (0 < value <= self.settings.max_timeout_s):
                raise _unprocessable(
                    what, f"{what} must be between 0 and {self.settings.max_timeout_s:g} seconds", "invalid_timeout"
                )
        bad = [a for a in schedule.notify_email if not isinstance(a, str) or not _ADDRESS.fullmatch(a)]
        if bad or len(schedule.notify_email) > _MAX_ADDRESSES:
            shown = f"not an e-mail address: {bad[0]!r}" if bad else f"at most {_MAX_ADDRESSES} addresses"
            raise _unprocessable("notify_email", f"notify_email: {shown}", "invalid_notify_email")
        unknown = [s for s in schedule.notify_on if s not in NOTIFY_STATES]
        if unknown:
            raise _unprocessable(
                "notify_on",
                f"notify_on: unknown state {unknown[0]!r}; use any of {', '.join(NOTIFY_STATES)}",
                "invalid_notify_on",
            )
        problems = check_placeholders(schedule.parameters)
        if problems:
            raise Unprocessable(
                f"parameter '{problems[0]['parameter']}': {problems[0]['problem']}",
                code="invalid_parameters",
                problems=problems,
            )
        info = await asyncio.to_thread(self.jobs.inspect, schedule.notebook, User(schedule.owner))
        await asyncio.to_thread(self.jobs.kernels.check, schedule.kernel_name or info.kernel_name)
        # Checked as the next tick would run them: with the placeholders replaced.
        sample = render_parameters(schedule.parameters, cron.next_runs(fields, tz, utcnow(), 1)[0])
        check_parameters(info.parameters, sample)
        steps = validate_steps(schedule.steps, parameters=sample) if schedule.steps is not None else None
        return dataclasses.replace(schedule, cron=fields, notebook=info.path, steps=steps)

    # read --------------------------------------------------------------------------------------------------
    async def get(self, user: User, schedule_id: int) -> Schedule:
        schedule = await self.store.get(schedule_id) if 1 <= schedule_id <= MAX_ID else None
        if schedule is None or not (user.admin or schedule.owner == user.name):
            # Someone else's schedule answers like a missing one.
            raise NotFound(f"no schedule {schedule_id}", code="schedule_not_found")
        return schedule

    async def visible(self, user: User) -> Sequence[Schedule]:
        return await self.store.list(owner=None if user.admin else user.name)

    # change ------------------------------------------------------------------------------------------------
    async def create(self, user: User, fields: dict[str, Any]) -> Schedule:
        now = utcnow()
        schedule = await self._checked(
            Schedule(id=0, owner=user.name, created_at=now, updated_at=now, ticks_from=now, **fields)
        )
        schedule = await self.store.add(schedule)
        await self._announce("schedule.created", schedule)
        return schedule

    async def update(self, user: User, schedule_id: int, changes: dict[str, Any]) -> Schedule:
        current = await self.get(user, schedule_id)
        now = utcnow()
        changed = dataclasses.replace(current, **changes, updated_at=now)
        checked = await self._checked(changed)
        if any(getattr(checked, f) != getattr(current, f) for f in _TICK_FIELDS):
            # Paused or re-timed: the ticks that fell before now are not owed (a resume is not a catch-up).
            checked = dataclasses.replace(checked, ticks_from=now)
        if not await self.store.save(checked):
            raise NotFound(f"no schedule {schedule_id}", code="schedule_not_found")
        await self._announce("schedule.updated", checked)
        return checked

    async def delete(self, user: User, schedule_id: int) -> None:
        schedule = await self.get(user, schedule_id)
        await self.store.delete(schedule_id)
        await self.publish(Event("schedule.deleted", {"schedule": schedule_id, "owner": schedule.owner}))

    # runs --------------------------------------------------------------------------------------------------
    async def start_run(self, schedule: Schedule, tick_at: datetime) -> Job:
        """Submit the schedule's job for the tick at `tick_at`, as its owner would (the same checks)."""
        local = tick_at.astimezone(cron.zone(schedule.timezone))
        request = SubmitRequest(
            notebook=schedule.notebook,
            parameters=render_parameters(schedule.parameters, local),
            timeout_s=schedule.timeout_s,
            cell_timeout_s=schedule.cell_timeout_s,
            kernel_name=schedule.kernel_name,
            steps=schedule.steps,
            schedule_id=schedule.id,
        )
        # The schedule does not record whether its owner is an admin: its runs keep to the owner's own areas.
        return await self.jobs.submit(User(schedule.owner), request)

    async def run_now(self, user: User, schedule_id: int) -> Job:
        """Run the schedule at once, outside its ticks (paused or not, whatever runs already)."""
        schedule = await self.get(user, schedule_id)
        job = await self.start_run(schedule, utcnow())
        await self._announce("schedule.ran", schedule, job=job.id)
        return job

    # what a client sees ------------------------------------------------------------------------------------
    async def views(self, schedules: Sequence[Schedule]) -> list[dict[str, Any]]:
        """The JSON of each schedule (ScheduleOut): its fields, state, next runs, last run and last tick."""
        ids = [s.id for s in schedules]
        last_jobs = await self.store.last_jobs(ids)
        last_ticks = await self.store.latest_ticks(ids)
        return [schedule_json(s, last_jobs.get(s.id), last_ticks.get(s.id)) for s in schedules]

    async def view(self, schedule: Schedule) -> dict[str, Any]:
        return (await self.views([schedule]))[0]

    async def _announce(self, kind: str, schedule: Schedule, **extra: Any) -> None:
        view = await self.view(schedule)
        await self.publish(Event(kind, {"schedule": schedule.id, "owner": schedule.owner, **extra, "view": view}))

    async def announce_tick(self, schedule: Schedule, tick: Tick) -> None:
        """Tell the owner what a tick did (started a job, was skipped, waits, failed to start)."""
        await self._announce(
            "schedule.ticked",
            schedule,
            tick_at=isoformat(tick.tick_at),
            outcome=tick.outcome,
            job=tick.job_id,
            error=tick.error,
        )


def schedule_json(schedule: Schedule, last_job: Job | None, last_tick: Tick | None) -> dict[str, Any]:
    tz = cron.zone(schedule.timezone)
    upcoming = cron.next_runs(schedule.cron, tz, utcnow(), NEXT_RUNS) if schedule.enabled else []
    return {
        "id": schedule.id,
        "owner": schedule.owner,
        "name": schedule.name,
        "notebook": schedule.notebook,
        "kernel_name": schedule.kernel_name,
        "parameters": schedule.parameters,
        "cron": schedule.cron,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "state": "active" if schedule.enabled else "paused",
        "timeout_s": schedule.timeout_s,
        "cell_timeout_s": schedule.cell_timeout_s,
        "steps": schedule.steps,
        "overlap": schedule.overlap,
        "missed": schedule.missed,
        "notify_email": schedule.notify_email,
        "notify_on": schedule.notify_on,
        "created_at": isoformat(schedule.created_at),
        "updated_at": isoformat(schedule.updated_at),
        "next_runs": [t.isoformat(timespec="seconds") for t in upcoming],
        "last_run": None
        if last_job is None
        else {
            "job_id": last_job.id,
            "state": last_job.state.value,
            "created_at": isoformat(last_job.created_at),
            "finished_at": isoformat(last_job.finished_at),
        },
        "last_tick": None
        if last_tick is None
        else {
            "tick_at": isoformat(last_tick.tick_at),
            "outcome": last_tick.outcome,
            "job_id": last_tick.job_id,
            "error": last_tick.error,
        },
    }
