"""Schedules in the job database: their rows, the ticks they fired, and the one insert that decides who runs a tick.

Works on the job store's engine (SQLite or PostgreSQL); the tables come from migration 0006.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from nbrelay.models import UNFINISHED_STATES, Job, utcnow
from nbrelay.store.shielded import calls_finish_when_cancelled
from nbrelay.store.tables import UtcDateTime, jobs, metadata, to_job

__all__ = ["Schedule", "ScheduleStore", "Tick", "TickOutcome", "schedule_ticks", "schedules"]

# Mirror migrations/versions/0006_schedules.py (tests/store/test_sql.py checks they do not drift apart).
schedules = sa.Table(
    "schedules",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String, nullable=False),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("notebook", sa.String, nullable=False),
    sa.Column("kernel_name", sa.String, nullable=True),
    sa.Column("parameters", sa.JSON, nullable=False),
    sa.Column("cron", sa.String(200), nullable=False),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("timeout_s", sa.Float, nullable=True),
    sa.Column("cell_timeout_s", sa.Float, nullable=True),
    sa.Column("steps", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("overlap", sa.String(16), nullable=False, server_default="skip"),
    sa.Column("missed", sa.String(16), nullable=False, server_default="run_once"),
    sa.Column("notify_email", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("notify_on", sa.JSON, nullable=False, server_default="[]"),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
    sa.Column("ticks_from", UtcDateTime, nullable=False),
    sa.Index("ix_schedules_owner_id", "owner", "id"),
    sqlite_autoincrement=True,
)

schedule_ticks = sa.Table(
    "schedule_ticks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("schedule_id", sa.Integer, sa.ForeignKey("schedules.id", ondelete="CASCADE"), nullable=False),
    sa.Column("tick_at", UtcDateTime, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("job_id", sa.Integer, nullable=True),
    sa.Column("node", sa.String(200), nullable=True),
    sa.Column("error", sa.String, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("schedule_id", "tick_at", name="uq_schedule_ticks_schedule_tick"),
    sa.Index("ix_schedule_ticks_outcome", "outcome", "schedule_id"),
    sqlite_autoincrement=True,
)


class TickOutcome:
    STARTED = "started"  # a job was submitted for the tick (job_id)
    SKIPPED = "skipped"  # by the overlap or the missed-tick policy (error says which)
    WAITING = "waiting"  # overlap "queue": starts once the schedule's previous run has finished
    FAILED = "failed"  # the job could not be submitted (error says why)


@dataclass(frozen=True, slots=True)
class Schedule:
    id: int
    owner: str
    notebook: str
    cron: str
    timezone: str
    name: str | None = None
    kernel_name: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    timeout_s: float | None = None
    cell_timeout_s: float | None = None
    steps: list[dict[str, Any]] | None = None  # None: the notebook's own metadata.nbrelay.steps at each run
    overlap: str = "skip"  # skip | queue
    missed: str = "run_once"  # run_once | skip
    notify_email: list[str] = field(default_factory=list)
    notify_on: list[str] = field(default_factory=list)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    ticks_from: datetime = field(default_factory=utcnow)  # ticks before this are not owed (created, resumed)


@dataclass(frozen=True, slots=True)
class Tick:
    id: int
    schedule_id: int
    tick_at: datetime
    outcome: str
    job_id: int | None = None
    node: str | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=utcnow)


def _to_schedule(row: Row[Any]) -> Schedule:
    m = dict(row._mapping)
    m["enabled"] = bool(m["enabled"])
    m["parameters"] = dict(m["parameters"] or {})
    m["notify_email"] = list(m["notify_email"] or [])
    m["notify_on"] = list(m["notify_on"] or [])
    return Schedule(**m)


def _to_tick(row: Row[Any]) -> Tick:
    return Tick(**row._mapping)


@calls_finish_when_cancelled
class ScheduleStore:
    """Schedules and their ticks on the job store's engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    # schedules ---------------------------------------------------------------------------------------------
    async def add(self, schedule: Schedule) -> Schedule:
        values = dataclasses.asdict(schedule)
        del values["id"]
        async with self._engine.begin() as conn:
            result = await conn.execute(schedules.insert().values(values))
        key = result.inserted_primary_key
        assert key is not None, "an INSERT always reports its primary key"
        return dataclasses.replace(schedule, id=int(key[0]))

    async def get(self, schedule_id: int) -> Schedule | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(schedules.select().where(schedules.c.id == schedule_id))).first()
        return _to_schedule(row) if row is not None else None

    async def list(self, *, owner: str | None = None, enabled: bool | None = None) -> Sequence[Schedule]:
        query = schedules.select().order_by(schedules.c.id)
        if owner is not None:
            query = query.where(schedules.c.owner == owner)
        if enabled is not None:
            query = query.where(schedules.c.enabled == enabled)
        async with self._engine.connect() as conn:
            return [_to_schedule(row) for row in await conn.execute(query)]

    async def save(self, schedule: Schedule) -> bool:
        """Write every field of the schedule; False when it is gone."""
        values = dataclasses.asdict(schedule)
        del values["id"]
        async with self._engine.begin() as conn:
            result = await conn.execute(schedules.update().where(schedules.c.id == schedule.id).values(values))
        return result.rowcount == 1

    async def delete(self, schedule_id: int) -> bool:
        async with self._engine.begin() as conn:
            # Explicitly, not only by ON DELETE CASCADE: SQLite enforces it only with foreign_keys on.
            await conn.execute(schedule_ticks.delete().where(schedule_ticks.c.schedule_id == schedule_id))
            result = await conn.execute(schedules.delete().where(schedules.c.id == schedule_id))
        return result.rowcount == 1

    # ticks -------------------------------------------------------------------------------------------------
    async def record_ticks(self, ticks: Sequence[Tick]) -> Sequence[Tick]:
        """Record each tick once, in one statement: the ticks whose insert won, with their ids; a tick another
        loop or node recorded first is left out (it is theirs). This insert is what makes a tick fire once."""
        if not ticks:
            return []
        rows = [{k: v for k, v in dataclasses.asdict(t).items() if k != "id"} for t in ticks]
        try:
            won = await self._insert_ticks(rows)
        except sa.exc.IntegrityError:
            # A schedule was deleted since the loop listed it (its foreign key fails the whole statement, and every
            # other schedule's tick with it): one at a time, and the deleted one's left out.
            won = {}
            for row in rows:
                with contextlib.suppress(sa.exc.IntegrityError):
                    won.update(await self._insert_ticks([row]))
        # Compared in UTC: a local time in a repeated hour never equals a datetime of another zone (PEP 495).
        keys = [(t.schedule_id, t.tick_at.astimezone(UTC)) for t in ticks]
        return [replace(t, id=won[key]) for t, key in zip(ticks, keys, strict=True) if key in won]

    async def _insert_ticks(self, rows: Sequence[dict[str, Any]]) -> dict[tuple[int, datetime], int]:
        query = (
            self._insert(schedule_ticks)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["schedule_id", "tick_at"])
            .returning(schedule_ticks.c.id, schedule_ticks.c.schedule_id, schedule_ticks.c.tick_at)
        )
        async with self._engine.begin() as conn:
            return {(row.schedule_id, row.tick_at): int(row.id) for row in await conn.execute(query)}

    async def finish_tick(
        self, tick_id: int, outcome: str, *, job_id: int | None = None, error: str | None = None
    ) -> None:
        query = schedule_ticks.update().where(schedule_ticks.c.id == tick_id)
        async with self._engine.begin() as conn:
            await conn.execute(query.values(outcome=outcome, job_id=job_id, error=error))

    async def take_waiting(self, tick_id: int, *, node: str) -> bool:
        """Move a waiting tick to started for `node`: one conditional UPDATE, so of several takers one wins."""
        query = (
            schedule_ticks.update()
            .where(schedule_ticks.c.id == tick_id, schedule_ticks.c.outcome == TickOutcome.WAITING)
            .values(outcome=TickOutcome.STARTED, node=node)
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(query)
        return result.rowcount == 1

    async def last_ticks(self, schedule_ids: Iterable[int]) -> dict[int, datetime]:
        """The latest recorded tick time of each schedule that has one."""
        ids = list(schedule_ids)
        if not ids:
            return {}
        query = (
            sa.select(schedule_ticks.c.schedule_id, sa.func.max(schedule_ticks.c.tick_at))
            .where(schedule_ticks.c.schedule_id.in_(ids))
            .group_by(schedule_ticks.c.schedule_id)
        )
        async with self._engine.connect() as conn:
            # max() keeps the column's type, so SQLite's text comes back as an aware datetime too.
            return {int(schedule_id): last for schedule_id, last in await conn.execute(query)}

    async def latest_ticks(self, schedule_ids: Iterable[int]) -> dict[int, Tick]:
        """The latest recorded tick of each schedule that has one, in one statement."""
        ids = list(schedule_ids)
        if not ids:
            return {}
        newest = (
            sa.select(schedule_ticks.c.schedule_id, sa.func.max(schedule_ticks.c.tick_at).label("tick_at"))
            .where(schedule_ticks.c.schedule_id.in_(ids))
            .group_by(schedule_ticks.c.schedule_id)
            .subquery()
        )
        query = schedule_ticks.select().join(
            newest,
            sa.and_(schedule_ticks.c.schedule_id == newest.c.schedule_id, schedule_ticks.c.tick_at == newest.c.tick_at),
        )
        async with self._engine.connect() as conn:
            return {tick.schedule_id: tick for tick in map(_to_tick, await conn.execute(query))}

    async def ticks(self, schedule_id: int, *, limit: int = 20) -> Sequence[Tick]:
        """The schedule's latest ticks, newest first."""
        query = (
            schedule_ticks.select()
            .where(schedule_ticks.c.schedule_id == schedule_id)
            .order_by(schedule_ticks.c.tick_at.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_to_tick(row) for row in await conn.execute(query)]

    async def waiting_ticks(self, *, limit: int = 1000) -> Sequence[Tick]:
        """Ticks waiting for their schedule's previous run to finish, oldest first."""
        query = (
            schedule_ticks.select()
            .where(schedule_ticks.c.outcome == TickOutcome.WAITING)
            .order_by(schedule_ticks.c.tick_at, schedule_ticks.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_to_tick(row) for row in await conn.execute(query)]

    async def count_waiting(self, schedule_ids: Iterable[int]) -> dict[int, int]:
        """How many ticks wait, for each of these schedules that has any."""
        query = (
            sa.select(schedule_ticks.c.schedule_id, sa.func.count())
            .where(schedule_ticks.c.schedule_id.in_(list(schedule_ids)))
            .where(schedule_ticks.c.outcome == TickOutcome.WAITING)
            .group_by(schedule_ticks.c.schedule_id)
        )
        async with self._engine.connect() as conn:
            return {int(sid): int(n) for sid, n in await conn.execute(query)}

    # the schedule's jobs -----------------------------------------------------------------------------------
    async def last_jobs(self, schedule_ids: Iterable[int]) -> dict[int, Job]:
        """The newest job of each schedule that has started one."""
        ids = list(schedule_ids)
        if not ids:
            return {}
        newest = sa.select(sa.func.max(jobs.c.id)).where(jobs.c.schedule_id.in_(ids)).group_by(jobs.c.schedule_id)
        async with self._engine.connect() as conn:
            rows = await conn.execute(jobs.select().where(jobs.c.id.in_(newest)))
            found = [to_job(row) for row in rows]
        return {job.schedule_id: job for job in found if job.schedule_id is not None}

    async def unfinished_jobs(self, schedule_ids: Iterable[int]) -> dict[int, int]:
        """For each of these schedules with a queued or running job: the oldest such job's id."""
        query = (
            sa.select(jobs.c.schedule_id, sa.func.min(jobs.c.id))
            .where(jobs.c.schedule_id.in_(list(schedule_ids)))
            .where(jobs.c.state.in_([s.value for s in UNFINISHED_STATES]))
            .group_by(jobs.c.schedule_id)
        )
        async with self._engine.connect() as conn:
            return {int(sid): int(job_id) for sid, job_id in await conn.execute(query)}
