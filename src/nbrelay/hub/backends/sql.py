"""The durable hub backend (the embedded default): history kept in the job database, so a client resumes
exactly across a server restart. Fan-out is to this process's subscribers (several web nodes use redis://).

Group commit: the publishes made while a write is under way, or in the same loop tick, are written together in one
transaction, with offsets in publish order per stream; each publisher is answered, and its events handed to the
subscribers, once that transaction has committed — never before (docs/protocol.md, "What survives a crash").

The backend owns its two tables and creates them itself at start (the job store's migrations know nothing of
them; databases where the store's migration 0003 made them keep their rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from nbrelay.errors import HubUnavailable
from nbrelay.hub.backends.base import Deliver, History
from nbrelay.hub.backends.sql_batch import Publish, Statements, offsets_needed, place, sqlite_ts, trims
from nbrelay.models import Event, compact_json, utcnow
from nbrelay.store.loop_sqlite import LoopSqlite, is_busy
from nbrelay.store.shielded import finishes_when_cancelled
from nbrelay.store.sql import UtcDateTime, engine_url, sqlite_pragmas

_EXPIRE_EVERY_S = 60.0
# A transaction holds at most this many events (a publish on two streams counts two): it stays short, since the
# job store waits for the same SQLite write lock.
_MAX_BATCH_EVENTS = 500
# Events waiting for their transaction, at most; beyond it publishers wait for room (nothing is dropped).
_MAX_PENDING_EVENTS = 10_000
_CHECKPOINT_EVERY = 200  # batches on the loop's connection between checkpoints (~1000 pages, as SQLite's own)
_PG_CREATE_LOCK = 0x6E62687562  # "nbhub": serialises nodes creating the tables at once
_LOCK_TRY_MS = 1000  # the writer thread's wait for SQLite's write lock per try (a warning after each)

log = logging.getLogger(__name__)

metadata = sa.MetaData()
hub_streams = sa.Table(
    "hub_streams",
    metadata,
    sa.Column("name", sa.String(160), primary_key=True),
    sa.Column("epoch", sa.String(32), nullable=False),
    sa.Column("last_offset", sa.BigInteger, nullable=False),
)
hub_events = sa.Table(
    "hub_events",
    metadata,
    sa.Column("stream", sa.String(160), primary_key=True),
    sa.Column("offset", sa.BigInteger, primary_key=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Column("ts", UtcDateTime, nullable=False),
    sa.Index("ix_hub_events_ts", "ts"),
)


class SqlBackend:
    def __init__(
        self,
        database_url: str,
        *,
        history_size: int = 1000,
        history_ttl_s: float = 3600.0,
        lock_wait_s: float = 60.0,
    ):
        url = engine_url(database_url)
        self.where = url.render_as_string(hide_password=True)  # for messages
        self.history_size = history_size
        self.history_ttl_s = history_ttl_s
        # SQLite: how long a batch waits for the write lock (the job store, another process on the same file may
        # hold it a while on a loaded machine) before its publishes fail. A publish promises durability: it
        # rather waits than fails, and a change whose announcement failed is not heard of by any page.
        self.lock_wait_s = lock_wait_s
        self._deliver: Deliver | None = None
        self._last_expiry = 0.0
        # Publishes waiting for the next transaction, in call order; one drain task writes them batch after batch
        # (one transaction at a time keeps offsets in publish order without a lock or a retry).
        self._pending: deque[Publish] = deque()
        self._pending_events = 0
        self._room = asyncio.Event()  # set while fewer than _MAX_PENDING_EVENTS events wait
        self._room.set()
        self._drainer: asyncio.Task[None] | None = None
        self._closing = False
        self._sqlite = url.get_backend_name() == "sqlite"
        self._sql = Statements(postgres=not self._sqlite)
        # SQLite: the async driver pays a thread hop for every statement and fetch. A plain sqlite3 connection
        # on a thread of our own runs a whole batch (its statements prepared once, by sqlite3's statement
        # cache) in one hop. PostgreSQL's driver is natively async and prepares repeated statements itself.
        self._sync_engine: sa.Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._db: Any = None  # the writer thread's sqlite3 connection (a pool checkout kept until close)
        # SQLite also writes on the event loop's thread when the write lock is free at once: the hop to the writer
        # thread and back cost more CPU than the transaction itself (~130 against ~110 us, measured). Busy (the
        # job store is writing): the batch goes to the writer thread, which waits for the lock. This connection
        # never checkpoints (that can wait for the disk); the writer thread does, every _CHECKPOINT_EVERY batches.
        self._here: LoopSqlite | None = None
        self._loop_batches = 0
        self._pg: AsyncConnection | None = None  # PostgreSQL: the writer's connection, kept likewise
        if self._sqlite:
            self.engine: AsyncEngine = create_async_engine(url)
            sa.event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
            self._sync_engine = sa.create_engine(url.set(drivername="sqlite"), pool_size=1)
            sa.event.listen(self._sync_engine, "connect", sqlite_pragmas)
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-writer")
            self._here = LoopSqlite(url, sqlite_pragmas)
        else:
            self.engine = create_async_engine(url, pool_size=3, max_overflow=5, pool_pre_ping=True)

    async def start(self, deliver: Deliver) -> None:
        await self._create_tables()
        self._deliver = deliver

    async def _create_tables(self) -> None:
        """Create the tables unless they exist (kept as they are when they do), one node at a time."""
        async with self.engine.connect() as conn:
            if self._sqlite:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock first: two creators queue up
            else:
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CREATE_LOCK})
            await conn.run_sync(metadata.create_all)
            await conn.commit()

    async def close(self) -> None:
        """Write what was published before (every publish that was called gets its answer), then let go."""
        self._closing = True
        while self._drainer is not None and not self._drainer.done():
            await asyncio.wait({self._drainer})
        self._deliver = None
        if self._here is not None:
            self._here.close()
        if self._writer is not None:
            if self._db is not None:
                await asyncio.get_running_loop().run_in_executor(self._writer, self._db.close)
                self._db = None
            self._writer.shutdown(wait=True)
            self._writer = None
        if self._pg is not None:
            await self._pg.close()
            self._pg = None
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        await self.engine.dispose()

    async def watch(self, stream: str) -> None:
        """Nothing to do: this backend delivers the events published by this process, to this process."""

    async def unwatch(self, stream: str) -> None:
        """Nothing to do (see watch)."""

    async def publish(self, event: Event, streams: Sequence[str]) -> list[Event]:
        """The event on all its streams, in the next transaction (a job's event goes to two streams, in the same
        one); returns once it has committed. A publish cancelled while it waits is still written."""
        if self._closing:
            raise HubUnavailable("the hub is closing: it takes no more events", hint="publish before closing it")
        # Encoded here, once for all its streams: an event that cannot be encoded fails its own publisher only.
        item = Publish(event, tuple(streams), compact_json(event.data), asyncio.get_running_loop().create_future())
        # Full: the publisher waits for room. Never dropped: a publish is a promise of durability.
        while self._pending_events >= _MAX_PENDING_EVENTS:
            self._room.clear()
            await self._room.wait()
        self._pending.append(item)
        self._pending_events += len(item.streams)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await item.done

    async def _drain(self) -> None:
        """Write the pending publishes, a batch per transaction, until none is left. The task starts on the loop's
        next turn, so every publish of the current turn is in its first batch; later ones gather meanwhile."""
        batch: list[Publish] = []
        try:
            while self._pending:
                batch = self._take()
                try:
                    placed = await self._write(batch)
                except Exception as exc:  # the transaction rolled back: none of the batch was written
                    for item in batch:
                        item.answer(error=self._failed(len(batch), exc))
                    continue
                for item, events in zip(batch, placed, strict=True):
                    for positioned in events:
                        assert positioned.stream is not None and positioned.epoch is not None
                        if self._deliver is not None:
                            self._deliver(positioned)
                    item.answer(events)
                batch = []
        except BaseException as exc:  # cancelled (the loop ends): nobody may wait for ever
            for item in [*batch, *self._pending]:
                item.answer(error=self._failed(len(batch), exc))
            self._pending.clear()
            raise

    def _take(self) -> list[Publish]:
        batch: list[Publish] = []
        size = 0
        while self._pending and size < _MAX_BATCH_EVENTS:
            item = self._pending.popleft()
            batch.append(item)
            size += len(item.streams)
        self._pending_events -= size
        if self._pending_events < _MAX_PENDING_EVENTS:
            self._room.set()
        return batch

    def _failed(self, count: int, exc: BaseException) -> HubUnavailable:
        return HubUnavailable(
            f"the hub could not write {count} event(s) to its database at {self.where}: {exc!r:.300}",
            hint="the events were not published (nothing of their transaction was kept); the server's log and "
            "the database say why",
        )

    async def _write(self, batch: list[Publish]) -> list[list[Event]]:
        now = time.monotonic()
        expire = now - self._last_expiry >= _EXPIRE_EVERY_S
        if expire:
            self._last_expiry = now
        if self._writer is None:
            return await self._write_postgres(batch, expire)
        if not expire:  # the expiry's DELETE may take long: the writer thread's job
            placed = self._write_sqlite_here(batch)
            if placed is not None:
                return placed
        return await asyncio.get_running_loop().run_in_executor(self._writer, self._write_sqlite, batch, expire)

    def _loop_connection(self) -> Any:
        """The event loop thread's own sqlite3 connection (opened on first use): never waits for a lock."""
        assert self._here is not None
        return self._here.dbapi

    def _write_sqlite_here(self, batch: list[Publish]) -> list[list[Event]] | None:
        """The batch on the loop's own connection if SQLite's write lock is free now; None if it is not."""
        assert self._writer is not None
        db = self._loop_connection()
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return None
            raise
        placed = self._sqlite_transaction(db, batch, expire=False)
        self._loop_batches += 1
        if self._loop_batches % _CHECKPOINT_EVERY == 0:
            self._writer.submit(self._checkpoint)
        return placed

    def _checkpoint(self) -> None:
        """Copy the write-ahead log into the database (on the writer thread), as SQLite would at a commit."""
        self._writer_db().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _writer_db(self) -> Any:
        """The writer thread's sqlite3 connection (opened on its first use)."""
        assert self._sync_engine is not None
        if self._db is None:
            self._db = self._sync_engine.raw_connection()
            self._db.driver_connection.execute(f"PRAGMA busy_timeout = {_LOCK_TRY_MS}")
        return self._db.driver_connection

    def _write_sqlite(self, batch: list[Publish], expire: bool) -> list[list[Event]]:
        """The batch in one transaction on the writer thread's sqlite3 connection."""
        db = self._writer_db()
        self._begin_waiting(db, len(batch))
        return self._sqlite_transaction(db, batch, expire)

    def _begin_waiting(self, db: Any, count: int) -> None:
        """BEGIN IMMEDIATE (the write lock first: no upgrade deadlock), trying again while another connection
        holds the lock, for up to lock_wait_s; SQLite's own error after that."""
        began = time.monotonic()
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                waited = time.monotonic() - began
                if not is_busy(exc) or waited >= self.lock_wait_s:
                    raise
                log.warning("%d hub event(s) have waited %.1f s for the write lock of %s", count, waited, self.where)

    def _sqlite_transaction(self, db: Any, batch: list[Publish], expire: bool) -> list[list[Event]]:
        """The batch's statements and the commit, on `db`, which has begun its transaction (BEGIN IMMEDIATE)."""
        sql = self._sql
        try:
            counts = offsets_needed(batch)
            last: dict[str, tuple[str, int]] = {}
            for stream, count in counts.items():
                rows = db.execute(sql.reserve, (count, stream)).fetchall()
                if rows:
                    last[stream] = (str(rows[0][0]), int(rows[0][1]))
                else:  # a new stream; nobody else can make it meanwhile: we hold the write lock
                    last[stream] = (secrets.token_hex(4), count)
                    db.execute(sql.create, (stream, last[stream][0], count)).fetchall()
            inserts, placed = place(batch, last, sqlite_ts)
            db.executemany(sql.insert, inserts)
            for stream, upto in trims(counts, last, self.history_size):
                db.execute(sql.trim, (stream, upto))
            if expire:
                db.execute(sql.expire, (sqlite_ts(self._expiry_cutoff()),))
            db.commit()
        except BaseException:
            db.rollback()
            raise
        return placed

    async def _write_postgres(self, batch: list[Publish], expire: bool) -> list[list[Event]]:
        """The batch in one transaction on the writer's own psycopg connection (kept: no pool checkout, no
        pre-ping per batch; dropped after a failure and opened again for the next batch)."""
        if self._pg is None:
            self._pg = await self.engine.connect()
        try:
            db: Any = (await self._pg.get_raw_connection()).driver_connection
            sql = self._sql
            async with db.transaction():
                counts = offsets_needed(batch)
                # One order for all writers: two processes never wait for each other's stream rows.
                last = {stream: await self._reserve_postgres(db, stream, counts[stream]) for stream in sorted(counts)}
                inserts, placed = place(batch, last, lambda ts: ts)
                if len(inserts) == 1:  # the common case at low rates: executemany's pipeline costs more for one
                    await db.execute(sql.insert, inserts[0])
                else:
                    async with db.cursor() as cursor:
                        await cursor.executemany(sql.insert, inserts)
                for stream, upto in trims(counts, last, self.history_size):
                    await db.execute(sql.trim, (stream, upto))
                if expire:
                    await db.execute(sql.expire, (self._expiry_cutoff(),))
        except BaseException:
            pg, self._pg = self._pg, None
            with contextlib.suppress(Exception):
                await pg.invalidate()
            raise
        return placed

    async def _reserve_postgres(self, db: Any, stream: str, count: int) -> tuple[str, int]:
        """Take `count` offsets of the stream: (its epoch, its new last offset)."""
        for _ in range(2):
            row = await (await db.execute(self._sql.reserve, (count, stream))).fetchone()
            if row is not None:
                return str(row[0]), int(row[1])
            epoch = secrets.token_hex(4)
            if await (await db.execute(self._sql.create, (stream, epoch, count))).fetchone() is not None:
                return epoch, count
            # Another process made the stream meanwhile: its row is there now.
        raise RuntimeError(f"the hub stream {stream} could be neither read nor made")

    def _expiry_cutoff(self) -> datetime:
        return utcnow() - timedelta(seconds=self.history_ttl_s)

    @finishes_when_cancelled
    async def position(self, stream: str) -> tuple[str, int]:
        """Where the stream stands, read from the database each time: another process on the same database (a
        second node, `nbrelay run --local`) may have published to it since this one last looked. On SQLite, a
        stream that exists is read on the loop's own connection (a point read: tens of microseconds, where a trip
        through the async driver cost ~1 ms, twice per WebSocket connect)."""
        if self._writer is not None:
            known = self._read_position_here(stream)
            if known is not None:
                return known
        async with self.engine.begin() as conn:
            return await conn.run_sync(_position, stream, lock=False)

    def _read_position_here(self, stream: str) -> tuple[str, int] | None:
        """(epoch, last offset) of an existing stream; None for a new one, or if the read could not be had at once
        (a WAL reader waits only in rare cases, such as the log being reset): the async path then answers."""
        try:
            row = self._loop_connection().execute(self._sql.position, (stream,)).fetchone()
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return None
            raise
        return (str(row[0]), int(row[1])) if row is not None else None

    @finishes_when_cancelled
    async def history(self, stream: str, after: int) -> History:
        cutoff = utcnow() - timedelta(seconds=self.history_ttl_s)
        async with self.engine.begin() as conn:
            epoch, last = await conn.run_sync(_position, stream, lock=False)
            # The window is exact here; the deletes in publish are only garbage collection.
            kept = sa.and_(
                hub_events.c.stream == stream,
                hub_events.c.offset > last - self.history_size,
                hub_events.c.ts >= cutoff,
            )
            first = (await conn.execute(sa.select(sa.func.min(hub_events.c.offset)).where(kept))).scalar()
            rows = await conn.execute(
                sa.select(hub_events.c.offset, hub_events.c.type, hub_events.c.data, hub_events.c.ts)
                .where(kept, hub_events.c.offset > after)
                .order_by(hub_events.c.offset)
            )
            events = [Event(r.type, r.data, ts=r.ts, stream=stream, offset=int(r.offset), epoch=epoch) for r in rows]
        return History(epoch=epoch, last_offset=last, first_offset=int(first) if first else last + 1, events=events)


def _position(conn: sa.Connection, stream: str, *, lock: bool) -> tuple[str, int]:
    """A stream's (epoch, last offset); a stream seen for the first time gets a new epoch."""
    query = sa.select(hub_streams.c.epoch, hub_streams.c.last_offset).where(hub_streams.c.name == stream)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is not None:
        return str(row.epoch), int(row.last_offset)
    epoch = secrets.token_hex(4)
    try:
        # Two connections may create the same new stream at once: the loser reads the winner's row.
        with conn.begin_nested():
            conn.execute(sa.insert(hub_streams).values(name=stream, epoch=epoch, last_offset=0))
    except IntegrityError:
        row = conn.execute(query).one()
        return str(row.epoch), int(row.last_offset)
    return epoch, 0
