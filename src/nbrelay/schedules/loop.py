"""The scheduler loop, one on every web node: find each schedule's due tick, record it, and start its job only
where the record's insert won (store.record_ticks), so a tick runs once however many loops see it.

`run_pending(now)` is one pass at a given time (tests drive it with their own clock); `start()` runs passes in a
task until `stop()`, sleeping until the next tick of any schedule, at most `poll_interval_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from nbrelay.errors import NbrelayError, log_failure
from nbrelay.models import Job, utcnow
from nbrelay.schedules import cron
from nbrelay.store.schedules import Schedule, ScheduleStore, Tick, TickOutcome

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

StartRun = Callable[[Schedule, datetime], Awaitable[Job]]
Announce = Callable[[Schedule, Tick], Awaitable[None]]
Clock = Callable[[], datetime]


@dataclass
class Scheduler:
    """Scheduler(store, start_run, node=…): `start_run(schedule, tick_at)` submits the job of a tick it won."""

    store: ScheduleStore
    start_run: StartRun
    node: str
    announce: Announce | None = None
    clock: Clock = utcnow
    # A tick found later than this after its time fell while no loop ran: the missed-tick policy decides.
    missed_after_s: float = 120.0
    poll_interval_s: float = 10.0  # changes made on other nodes are seen within this
    max_waiting: int = 10  # overlap "queue": at most this many ticks wait per schedule; more are skipped

    def __post_init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    # life cycle ---------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def wake(self) -> None:
        """Look again now (a schedule was created or changed on this node)."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()  # before the pass: a wake during it means a change the pass may have missed
            try:
                await self.run_pending(self.clock())
                delay_s = await self._until_next(self.clock())
            except Exception as exc:
                log_failure(log, exc, "scheduler pass failed; trying again in %s s", self.poll_interval_s)
                delay_s = self.poll_interval_s
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns a wake that comes with a cancel and
            # swallows the cancel, and stop() then waited for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await self._wake.wait()

    async def _until_next(self, now: datetime) -> float:
        delay_s = self.poll_interval_s
        for schedule in await self.store.list(enabled=True):
            tick = next(cron.ticks(schedule.cron, cron.zone(schedule.timezone), now))
            delay_s = min(delay_s, (tick - now).total_seconds() + 0.05)
        return max(0.05, delay_s)

    # one pass -----------------------------------------------------------------------------------------------
    async def run_pending(self, now: datetime) -> list[Tick]:
        """Handle every tick due at `now`: the waiting ones first (their turn comes before a newer tick's), then
        each schedule's latest due tick. The ticks this loop recorded or started, in order."""
        done: list[Tick] = []
        enabled = {s.id: s for s in await self.store.list(enabled=True)}
        if any(s.overlap == "queue" for s in enabled.values()):
            done += await self._start_waiting(enabled)
        last = await self.store.last_ticks(enabled)
        due: dict[int, datetime] = {}
        for schedule in enabled.values():
            tick_at = self._due(schedule, last.get(schedule.id), now)
            if tick_at is not None:
                due[schedule.id] = tick_at
        if not due:
            return done
        running = await self.store.unfinished_jobs(due)
        queueing = [i for i in due if enabled[i].overlap == "queue"]
        waiting = await self.store.count_waiting(queueing) if queueing else {}
        planned = []
        for schedule_id, tick_at in due.items():
            outcome, reason = self._decide(
                enabled[schedule_id], tick_at, now, running.get(schedule_id), waiting.get(schedule_id, 0)
            )
            planned.append(Tick(0, schedule_id, tick_at, outcome, node=self.node, error=reason))
        # One insert for all: the ticks it returns are this loop's; the others were recorded elsewhere first.
        for tick in await self.store.record_ticks(planned):
            schedule = enabled[tick.schedule_id]
            if tick.outcome == TickOutcome.STARTED:
                tick = await self._start(schedule, tick)
            else:
                await self._announce(schedule, tick)
            done.append(tick)
        return done

    async def _start_waiting(self, enabled: dict[int, Schedule]) -> list[Tick]:
        started: list[Tick] = []
        waiting = [t for t in await self.store.waiting_ticks() if t.schedule_id in enabled]
        running = await self.store.unfinished_jobs({t.schedule_id for t in waiting})
        for tick in waiting:
            if tick.schedule_id in running:
                continue
            if await self.store.take_waiting(tick.id, node=self.node):
                tick = await self._start(enabled[tick.schedule_id], replace(tick, outcome=TickOutcome.STARTED))
                started.append(tick)
                running[tick.schedule_id] = tick.job_id or 0  # one at a time: the next waits for this one
        return started

    def _due(self, schedule: Schedule, last_tick: datetime | None, now: datetime) -> datetime | None:
        """The schedule's latest tick not yet recorded, if one is due."""
        cursor = max(schedule.ticks_from, last_tick) if last_tick is not None else schedule.ticks_from
        try:
            due = cron.latest_tick(schedule.cron, cron.zone(schedule.timezone), cursor, now)
        except cron.CronError as exc:  # the zone went from the system's tz database since the schedule was made
            log.warning("schedule %s cannot tick: %s", schedule.id, exc)
            return None
        # In UTC: a local time in the repeated hour never equals the same instant in another zone (PEP 495).
        return due.astimezone(UTC) if due is not None else None

    def _decide(
        self, schedule: Schedule, due: datetime, now: datetime, running: int | None, waiting: int
    ) -> tuple[str, str | None]:
        """What the tick at `due` does: start, wait its turn or be skipped (and why)."""
        if schedule.missed == "skip" and (now - due) > timedelta(seconds=self.missed_after_s):
            return TickOutcome.SKIPPED, "missed while the service was not running (missed-tick policy: skip)"
        if schedule.overlap == "queue":
            if waiting >= self.max_waiting:
                return TickOutcome.SKIPPED, f"{waiting} runs already wait for their turn (overlap policy: queue)"
            if running is not None or waiting:
                return TickOutcome.WAITING, f"waits for job {running} to finish" if running else None
        elif running is not None:
            return TickOutcome.SKIPPED, f"job {running} of this schedule was unfinished (overlap policy: skip)"
        return TickOutcome.STARTED, None

    async def _start(self, schedule: Schedule, tick: Tick) -> Tick:
        try:
            job = await self.start_run(schedule, tick.tick_at)
        except NbrelayError as exc:  # the notebook went, a parameter no longer fits: the owner is told
            tick = replace(tick, outcome=TickOutcome.FAILED, error=exc.message)
            await self.store.finish_tick(tick.id, tick.outcome, error=tick.error)
        else:
            tick = replace(tick, job_id=job.id, error=None)
            await self.store.finish_tick(tick.id, tick.outcome, job_id=job.id)
        await self._announce(schedule, tick)
        return tick

    async def _announce(self, schedule: Schedule, tick: Tick) -> None:
        if self.announce is not None:
            try:
                await self.announce(schedule, tick)
            except Exception:
                log.exception("announcing tick %s of schedule %s", tick.tick_at, schedule.id)
