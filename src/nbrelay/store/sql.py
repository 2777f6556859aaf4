"""The JobStore on SQLAlchemy's async engine: SQLite (aiosqlite) by default, PostgreSQL (psycopg 3) by URL.

The schema is owned by the Alembic migrations next to this module; `start()` upgrades to head.
"""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from nbrelay.models import Job, JobState, utcnow
from nbrelay.store.base import TOKEN_HASH_MAX, NewJob, TokenRecord, check_user_name
from nbrelay.store.loop_sqlite import Busy, LoopSqlite
from nbrelay.store.notifications import enqueue
from nbrelay.store.shielded import calls_finish_when_cancelled, settle
from nbrelay.store.tables import job_row, jobs, metadata, to_job, to_token, tokens

# `metadata` here holds every table of the store: importing this module imports the schedules' and notifications'.
__all__ = ["MIGRATIONS_DIR", "SqlJobStore", "engine_url", "jobs", "metadata", "sqlite_pragmas", "tokens"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}
_WAL_ATTEMPTS = 5
T = TypeVar("T")
_PG_MIGRATION_LOCK = 0x6E6272656C6179  # "nbrelay": the advisory lock key that serialises migrations


def engine_url(url: str) -> URL:
    """The async SQLAlchemy URL for a store URL, or ValueError for a scheme the store does not speak."""
    accepted = "sqlite:///path, sqlite+aiosqlite:///path, postgresql://… or postgresql+psycopg://…"
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(f"unusable database URL {url!r}; expected {accepted}") from exc
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}; expected {accepted}")
    parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        # An in-memory database lives in one connection; the store needs a pool of them.
        raise ValueError(f"the SQLite job store needs a file: sqlite:///path/to/jobs.db, not {url!r}")
    return parsed


async def answers(engine: AsyncEngine) -> None:
    """Return once the engine's database answers a query (a connection out of its pool, or a new one); raise
    the driver's error when it does not. The readiness probe of the store and of the sql:// hub."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA busy_timeout = 5000")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        _enable_wal(cursor)
    finally:
        cursor.close()


def _enable_wal(cursor: Any) -> None:
    # WAL is a property of the file, so only the first connection to a new database switches it.
    # Two connections switching at the same moment deadlock and SQLite fails one at once without
    # calling the busy handler; by the retry the other has finished and the file is already WAL.
    for attempt in range(_WAL_ATTEMPTS):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise


def _upgrade_to_head(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    # Config values go through configparser interpolation, so a literal % must be doubled.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _filters(
    owner: str | sa.BindParameter[str] | None,
    states: Iterable[JobState] | None,
    notebook: str | sa.BindParameter[str] | None,
    schedule_id: int | sa.BindParameter[int] | None = None,
) -> list[sa.ColumnElement[bool]]:
    """The WHERE of a listing: values, or parameters (bindparam) to give at execution."""
    clauses: list[sa.ColumnElement[bool]] = []
    if owner is not None:
        clauses.append(jobs.c.owner == owner)
    if states is not None:
        clauses.append(jobs.c.state.in_([JobState(s).value for s in states]))
    if notebook is not None:
        clauses.append(jobs.c.notebook == notebook)
    if schedule_id is not None:
        clauses.append(jobs.c.schedule_id == schedule_id)
    return clauses


def _listing_params(
    owner: str | None, notebook: str | None, schedule_id: int | None, limit: int, offset: int
) -> dict[str, Any]:
    """The values of a _listing statement's parameters (those of its filters that are set)."""
    given = {"owner": owner, "notebook": notebook, "schedule_id": schedule_id}
    return {
        **{k: v for k, v in given.items() if v is not None},
        "limit": limit,
        "offset": offset,
        "upto": limit + offset,
    }


_SEEK_AT_MOST = 500  # rows per state that a listing read on the loop's own SQLite connection may seek


@functools.lru_cache(maxsize=256)
def _listing(
    by_owner: bool, states: tuple[JobState, ...] | None, by_notebook: bool, by_schedule: bool
) -> sa.Select[Any]:
    """Jobs newest first, a page of them (parameters: _listing_params). With several states, one index seek per
    state, newest first, merged: `state IN (...)` with `ORDER BY id` sends SQLite down (owner, id) through every
    job the owner ever ran (a snapshot of the unfinished among 200,000 finished took ~180 ms; seeking (owner,
    state, id), 0.3 ms). Built once per shape of filters: building and keying the merged statement cost more than
    running it."""

    def where(wanted: Iterable[JobState] | None) -> list[sa.ColumnElement[bool]]:
        return _filters(
            sa.bindparam("owner") if by_owner else None,
            wanted,
            sa.bindparam("notebook") if by_notebook else None,
            sa.bindparam("schedule_id") if by_schedule else None,
        )

    limit, offset = sa.bindparam("limit", type_=sa.Integer), sa.bindparam("offset", type_=sa.Integer)
    if states is None or len(states) < 2:
        return jobs.select().where(*where(states)).order_by(jobs.c.id.desc()).limit(limit).offset(offset)
    branches = [
        jobs.select()
        .where(*where([state]))
        .order_by(jobs.c.id.desc())
        .limit(sa.bindparam("upto", type_=sa.Integer))
        .subquery()
        for state in states
    ]
    merged = sa.union_all(*(sa.select(branch) for branch in branches)).subquery()
    return sa.select(merged).order_by(merged.c.id.desc()).limit(limit).offset(offset)


def _queue_positions_query() -> sa.Select[Any]:
    """Positions of the queued jobs among `ids` in one statement, so they come from a single snapshot; each is an
    index range count on (state, id), and only the asked-for rows are read: no queued job is loaded whole. Built
    once: a statement made per call cost more than its run (it is asked for with every queued job read over HTTP
    and every listing)."""
    ahead = sa.alias(jobs, "ahead")
    count = (
        sa.select(sa.func.count())
        .select_from(ahead)
        .where(ahead.c.state == JobState.QUEUED.value, ahead.c.id <= jobs.c.id)
        .scalar_subquery()
    )
    return sa.select(jobs.c.id, count).where(
        jobs.c.state == JobState.QUEUED.value, jobs.c.id.in_(sa.bindparam("ids", expanding=True))
    )


_QUEUE_POSITIONS = _queue_positions_query()
# The statements run at every job's submit and events, built once (building one per call cost as much as running
# it).
_ADD_JOB = jobs.insert()
_GET_JOB = jobs.select().where(jobs.c.id == sa.bindparam("job_id"))
_SET_PROGRESS = (
    jobs.update()
    .where(jobs.c.id == sa.bindparam("job_id"))
    .values(progress_cell=sa.bindparam("cell"), progress_total=sa.bindparam("total"))
)


@calls_finish_when_cancelled
class SqlJobStore:
    """A JobStore for one database; each call checks a connection out of the engine's pool."""

    def __init__(self, url: str) -> None:
        self.url = engine_url(url)
        self._sqlite = self.url.get_backend_name() == "sqlite"
        self._started = False
        self.outbox_writes = 0  # deliveries this store has put in the outbox (save of a job's end)
        # SQLite: a job's reads and progress at each of its events run on the loop's own connection when they need
        # not wait (loop_sqlite.py): ~1 ms of CPU each through the async driver, a tenth of it there.
        self._here: LoopSqlite | None = None
        if self._sqlite:
            self._engine: AsyncEngine = create_async_engine(self.url)
            event.listen(self._engine.sync_engine, "connect", sqlite_pragmas)
            self._here = LoopSqlite(self.url, sqlite_pragmas)
        else:
            self._engine = create_async_engine(self.url, pool_size=5, max_overflow=5, pool_pre_ping=True)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def start(self) -> None:
        if self._started:
            return
        if self._sqlite and self.url.database:
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        async with self._engine.connect() as conn:
            if self._sqlite:
                # sqlite3 does not BEGIN before DDL, so two processes migrating one file would race on
                # CREATE TABLE; take the write lock up front and let busy_timeout queue the other one.
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                # Serialises concurrent migrators; released when this transaction ends.
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            await conn.run_sync(_upgrade_to_head)
            await conn.commit()
        self._started = True

    async def close(self) -> None:
        await settle()  # calls whose callers were cancelled (a loop stopping, a client gone) end first
        if self._here is not None:
            self._here.close()
        await self._engine.dispose()
        self._started = False

    async def ping(self) -> None:
        await answers(self._engine)

    async def add_job(self, new: NewJob) -> Job:
        job = Job(
            id=0,
            owner=new.owner,
            notebook=new.notebook,
            kernel_name=new.kernel_name,
            parameters=dict(new.parameters),
            timeout_s=new.timeout_s,
            cell_timeout_s=new.cell_timeout_s,
            steps=list(new.steps),
            schedule_id=new.schedule_id,
        )
        row = job_row(job)

        def insert(conn: Connection) -> int:
            key = conn.execute(_ADD_JOB, row).inserted_primary_key
            assert key is not None, "an INSERT always reports its primary key"
            return int(key[0])

        return dataclasses.replace(job, id=await self._transaction(insert))

    async def get_job(self, job_id: int) -> Job | None:
        key = {"job_id": job_id}
        row = await self._transaction(lambda conn: conn.execute(_GET_JOB, key).first(), read_only=True)
        return to_job(row) if row is not None else None

    async def get_jobs(self, job_ids: Iterable[int]) -> Sequence[Job]:
        ids = list(job_ids)
        return await self._fetch(jobs.select().where(jobs.c.id.in_(ids)).order_by(jobs.c.id)) if ids else []

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
        wanted = tuple(sorted({JobState(s) for s in states})) if states is not None else None
        query = _listing(owner is not None, wanted, notebook is not None, schedule_id is not None)
        params = _listing_params(owner, notebook, schedule_id, limit, offset)
        if wanted is not None and notebook is None and schedule_id is None and limit + offset <= _SEEK_AT_MOST:
            # Index seeks that stop after limit + offset rows per state (the push snapshot of every connect): a read
            # that never waits long, so on SQLite it runs on the loop's own connection, not the driver's thread.
            return await self._transaction(
                lambda conn: [to_job(row) for row in conn.execute(query, params)], read_only=True
            )
        return await self._fetch(query, params)

    async def count_jobs(
        self,
        *,
        owner: str | None = None,
        states: Iterable[JobState] | None = None,
        notebook: str | None = None,
        schedule_id: int | None = None,
    ) -> int:
        query = sa.select(sa.func.count()).select_from(jobs).where(*_filters(owner, states, notebook, schedule_id))
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def save(self, job: Job, *, expect_state: JobState, expect_worker: str | None = None) -> bool:
        values = job_row(job)
        if not job.cancel_requested:
            # Cancel requests come from another actor than the saver: a stale copy must not clear one.
            del values["cancel_requested"]
        query = jobs.update().where(jobs.c.id == job.id, jobs.c.state == expect_state.value).values(values)
        if expect_worker is not None:
            query = query.where(jobs.c.worker == expect_worker)
        terminal = job.state.terminal and not expect_state.terminal

        def update(conn: Connection) -> tuple[bool, int]:
            if conn.execute(query).rowcount != 1:
                return False, 0
            # A job's end writes the notifications it owes into the outbox with it: together or not at all.
            return True, enqueue(conn, job) if terminal else 0

        saved, owed = await self._transaction(update)
        self.outbox_writes += owed  # the delivery loop wakes at a job's end only when it has something to deliver
        return saved

    # Leases are written and checked on one clock: the database's on PostgreSQL, where the worker that renews a
    # lease and the web node that reaps it are other machines (found from outside: a worker whose clock was 10 s
    # behind had every job of its reaped within 2 s, healthy); SQLite has one machine's.
    def _lease_clock(self) -> Any:
        return utcnow() if self._sqlite else sa.func.now()

    def _lease_until(self, lease_s: float) -> Any:
        if self._sqlite:
            return utcnow() + timedelta(seconds=lease_s)
        return sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, float(lease_s))

    async def claim(self, worker: str, *, lease_s: float | None, job_id: int | None = None) -> Job | None:
        now = utcnow()
        pick = sa.select(jobs.c.id).where(jobs.c.state == JobState.QUEUED.value)
        pick = pick.where(jobs.c.id == job_id) if job_id is not None else pick.order_by(jobs.c.id).limit(1)
        if not self._sqlite:
            # Claimers skip a row another claimer holds instead of queueing behind it (SQLite has one writer).
            pick = pick.with_for_update(skip_locked=True)
        query = (
            jobs.update()
            .where(jobs.c.id == pick.scalar_subquery(), jobs.c.state == JobState.QUEUED.value)
            .values(
                state=JobState.RUNNING.value,
                started_at=now,
                worker=worker,
                lease_expires_at=self._lease_until(lease_s) if lease_s is not None else None,
            )
            .returning(*jobs.c)
        )
        row = await self._transaction(lambda conn: conn.execute(query).first())
        return to_job(row) if row is not None else None

    async def renew_leases(self, worker: str, job_ids: Iterable[int], *, lease_s: float) -> dict[int, bool]:
        ids = list(job_ids)
        if not ids:
            return {}
        query = (
            jobs.update()
            .where(jobs.c.id.in_(ids), jobs.c.worker == worker, jobs.c.state == JobState.RUNNING.value)
            .values(lease_expires_at=self._lease_until(lease_s))
            .returning(jobs.c.id, jobs.c.cancel_requested)
        )
        async with self._engine.begin() as conn:
            return {int(row.id): bool(row.cancel_requested) for row in await conn.execute(query)}

    async def expired_leases(self, *, limit: int = 100) -> Sequence[Job]:
        query = (
            jobs.select()
            .where(jobs.c.state == JobState.RUNNING.value, jobs.c.lease_expires_at < self._lease_clock())
            .order_by(jobs.c.id)
            .limit(limit)
        )
        return await self._fetch(query)

    async def update_progress(self, job_id: int, cell: int, total: int) -> None:
        values = {"job_id": job_id, "cell": cell, "total": total}
        await self._transaction(lambda conn: conn.execute(_SET_PROGRESS, values))

    async def set_cancel_requested(self, job_id: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(jobs.update().where(jobs.c.id == job_id).values(cancel_requested=True))

    async def oldest_queued(self, limit: int) -> Sequence[Job]:
        query = jobs.select().where(jobs.c.state == JobState.QUEUED.value).order_by(jobs.c.id).limit(limit)
        return await self._fetch(query)

    async def queue_positions(self, job_ids: Iterable[int]) -> dict[int, int]:
        wanted = sorted(set(job_ids))
        if not wanted:
            return {}
        rows = await self._transaction(
            lambda conn: conn.execute(_QUEUE_POSITIONS, {"ids": wanted}).all(), read_only=True
        )
        return {int(job_id): int(position) for job_id, position in rows}

    async def jobs_in_state(self, state: JobState) -> Sequence[Job]:
        return await self._fetch(jobs.select().where(jobs.c.state == state.value).order_by(jobs.c.id))

    async def list_reports(
        self,
        *,
        notebook: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Sequence[Job]:
        query = (
            jobs.select()
            .where(jobs.c.report_path.is_not(None), *_filters(owner, None, notebook))
            .order_by(jobs.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        return await self._fetch(query)

    async def count_reports(self, *, notebook: str | None = None, owner: str | None = None) -> int:
        query = (
            sa.select(sa.func.count())
            .select_from(jobs)
            .where(jobs.c.report_path.is_not(None), *_filters(owner, None, notebook))
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def clear_report(self, job_id: int) -> Job | None:
        async with self._engine.begin() as conn:
            await conn.execute(jobs.update().where(jobs.c.id == job_id).values(report_path=None, output_path=None))
            # Read back in the same transaction: the row as this update left it.
            row = (await conn.execute(jobs.select().where(jobs.c.id == job_id))).first()
        return to_job(row) if row is not None else None

    async def add_token(self, name: str, token_hash: str, *, admin: bool = False) -> TokenRecord:
        check_user_name(name)
        if not isinstance(token_hash, str) or not 1 <= len(token_hash) <= TOKEN_HASH_MAX:
            # PostgreSQL would refuse an over-long hash and SQLite would keep it: refuse it on both.
            raise ValueError(f"a token hash must be a string of 1 to {TOKEN_HASH_MAX} characters")
        record = TokenRecord(
            id=0, name=name, token_hash=token_hash, admin=bool(admin), created_at=utcnow(), last_used_at=None
        )
        values = dataclasses.asdict(record)
        del values["id"]
        try:
            async with self._engine.begin() as conn:
                result = await conn.execute(tokens.insert().values(values))
        except IntegrityError as exc:
            # The name and hash were checked above, so the only constraint left to break is the unique hash.
            raise ValueError("a token with this hash is already stored") from exc
        key = result.inserted_primary_key
        assert key is not None, "an INSERT always reports its primary key"
        return dataclasses.replace(record, id=int(key[0]))

    async def find_token(self, token_hash: str) -> TokenRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(tokens.select().where(tokens.c.token_hash == token_hash))).first()
        return to_token(row) if row is not None else None

    async def touch_token(self, token_id: int) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(tokens.update().where(tokens.c.id == token_id).values(last_used_at=utcnow()))

    async def list_tokens(self, name: str | None = None) -> Sequence[TokenRecord]:
        query = tokens.select().order_by(tokens.c.id)
        if name is not None:
            query = query.where(tokens.c.name == name)
        async with self._engine.connect() as conn:
            return [to_token(row) for row in await conn.execute(query)]

    async def delete_tokens(self, name: str) -> int:
        async with self._engine.begin() as conn:
            result = await conn.execute(tokens.delete().where(tokens.c.name == name))
        return int(result.rowcount)

    async def _transaction(self, work: Callable[[Connection], T], *, read_only: bool = False) -> T:
        """`work` in one transaction, committed: on the loop's own SQLite connection when no other connection is
        writing (nothing there waits; in WAL a read waits for no writer, save in rare moments such as the log being
        reset), else through the async driver, which waits for the write lock."""
        if self._here is not None:
            try:
                return self._here.run(work)
            except Busy:
                pass  # rolled back: nothing of it was done
        async with self._engine.connect() if read_only else self._engine.begin() as conn:
            return await conn.run_sync(work)

    async def _fetch(self, query: sa.Select[Any], params: dict[str, Any] | None = None) -> list[Job]:
        async with self._engine.connect() as conn:
            return [to_job(row) for row in await conn.execute(query, params)]
