"""The durable hub backend (the embedded default): history kept in the job database, so a client resumes
exactly across a server restart. Fan-out is to this process's subscribers (several web nodes use redis://).

On SQLite (sqlite_writer.py) a publish is journaled, delivered and answered at once; the database gets the events
in groups, within `commit_window_s`. On PostgreSQL, shared by processes of several machines, the publishes made
while a write is under way, or in the same loop tick, are written together in one transaction, with offsets in
publish order per stream; each publisher is answered, and its events handed to the subscribers, once that
transaction has committed — never before. What each keeps through a crash: docs/protocol.md.

A stream that has no row yet has the epoch `epoch_for(stream)`, derived from the database's own random salt: every
process reading or making it agrees on it without writing (a new database, a new salt: new epochs).

The backend owns its tables and creates them itself at start (the job store's migrations know nothing of them;
databases where the store's migration 0003 made them keep their rows).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import time
from collections import deque
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from nbrelay.errors import HubUnavailable, reason_of
from nbrelay.hub.backends.base import Deliver, History
from nbrelay.hub.backends.sql_batch import EXPIRE_EVERY_S, Publish, Statements, offsets_needed, place, trims
from nbrelay.hub.backends.sqlite_writer import COMMIT_WINDOW_S, SqliteWriter
from nbrelay.models import Event, utcnow
from nbrelay.store.shielded import finishes_when_cancelled
from nbrelay.store.sql import answers, engine_url, sqlite_pragmas
from nbrelay.store.tables import UtcDateTime

# A transaction holds at most this many events (a publish on two streams counts two).
_MAX_BATCH_EVENTS = 500
# Events waiting for their transaction, at most; beyond it publishers wait for room (nothing is dropped).
_MAX_PENDING_EVENTS = 10_000
_PG_CREATE_LOCK = 0x6E62687562  # "nbhub": serialises nodes creating the tables at once
_SALT = "epoch_salt"

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
hub_meta = sa.Table(
    "hub_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(64), nullable=False),
)


class SqlBackend:
    def __init__(
        self,
        database_url: str,
        *,
        history_size: int = 1000,
        history_ttl_s: float = 3600.0,
        lock_wait_s: float = 60.0,
        commit_window_s: float = COMMIT_WINDOW_S,
    ):
        url = engine_url(database_url)
        self.where = url.render_as_string(hide_password=True)  # for messages
        self.history_size = history_size
        self.history_ttl_s = history_ttl_s
        self._deliver: Deliver | None = None
        self._salt = ""
        self._closing = False
        self._sql = Statements(postgres=True)  # PostgreSQL's; SQLite's writer has its own
        self.sqlite: SqliteWriter | None = None
        # PostgreSQL: publishes waiting for the next transaction, in call order; one drain task writes them batch
        # after batch (one transaction at a time keeps offsets in publish order without a lock or a retry).
        self._pending: deque[Publish] = deque()
        self._pending_events = 0
        self._room = asyncio.Event()  # set while fewer than _MAX_PENDING_EVENTS events wait
        self._room.set()
        self._drainer: asyncio.Task[None] | None = None
        self._last_expiry = 0.0
        self._pg: AsyncConnection | None = None  # the writer's connection, kept
        if url.get_backend_name() == "sqlite":
            self.engine: AsyncEngine = create_async_engine(url)
            sa.event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
            # SQLite: how long a group waits for the write lock (the job store, another process on the same file
            # may hold it a while on a loaded machine) before it is tried again later.
            self.sqlite = SqliteWriter(
                url,
                self.where,
                history_size=history_size,
                lock_wait_s=lock_wait_s,
                commit_window_s=commit_window_s,
                expiry_cutoff=self._expiry_cutoff,
                epoch_for=self.epoch_for,
            )
        else:
            self.engine = create_async_engine(url, pool_size=3, max_overflow=5, pool_pre_ping=True)

    async def start(self, deliver: Deliver) -> None:
        await self._create_tables()
        self._deliver = deliver
        if self.sqlite is not None:
            await self.sqlite.start(self._hand_on)

    def _hand_on(self, event: Event) -> None:
        if self._deliver is not None:
            self._deliver(event)

    async def _create_tables(self) -> None:
        """Create the tables unless they exist (kept as they are when they do) and the database's salt, one node
        at a time."""
        async with self.engine.connect() as conn:
            if self.sqlite is not None:
                await conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock first: two creators queue up
            else:
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_CREATE_LOCK})
            await conn.run_sync(metadata.create_all)
            salt = (await conn.execute(sa.select(hub_meta.c.value).where(hub_meta.c.key == _SALT))).scalar()
            if salt is None:
                salt = secrets.token_hex(16)
                await conn.execute(sa.insert(hub_meta).values(key=_SALT, value=salt))
            await conn.commit()
        self._salt = str(salt)

    def epoch_for(self, stream: str) -> str:
        """The epoch of a stream that has no row yet (the same in every process on this database)."""
        return hashlib.blake2b(f"{self._salt}:{stream}".encode(), digest_size=4).hexdigest()

    async def close(self) -> None:
        """Write what was published before (every publish that was called gets its answer), then let go."""
        self._closing = True
        while self._drainer is not None and not self._drainer.done():
            await asyncio.wait({self._drainer})
        if self.sqlite is not None:
            await self.sqlite.close()
        self._deliver = None
        if self._pg is not None:
            await self._pg.close()
            self._pg = None
        await self.engine.dispose()

    async def ping(self) -> None:
        try:
            await answers(self.engine)
        except (OSError, sa.exc.SQLAlchemyError) as exc:
            raise HubUnavailable(f"the hub's database at {self.where} did not answer: {reason_of(exc)}") from exc

    async def watch(self, stream: str) -> None:
        """Nothing to do: this backend delivers the events published by this process, to this process."""

    async def unwatch(self, stream: str) -> None:
        """Nothing to do (see watch)."""

    async def publish(self, event: Event, streams: Sequence[str]) -> list[Event]:
        """The event on all its streams (a job's event goes to two streams, in the same record or transaction).
        SQLite: returns once journaled and delivered; PostgreSQL: once committed. A publish cancelled while it
        waits is still made."""
        if self._closing:
            raise HubUnavailable("the hub is closing: it takes no more events", hint="publish before closing it")
        if self.sqlite is not None:
            return await self.sqlite.publish(event, streams)
        # Encoded here, once for all its streams: an event that cannot be encoded fails its own publisher only.
        item = Publish(event, tuple(streams), event.data_json(), asyncio.get_running_loop().create_future())
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
                    placed = await self._write_postgres(batch)
                except Exception as exc:  # the transaction rolled back: none of the batch was written
                    for item in batch:
                        item.answer(error=self._failed(len(batch), exc))
                    continue
                for item, events in zip(batch, placed, strict=True):
                    for positioned in events:
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

    async def _write_postgres(self, batch: list[Publish]) -> list[list[Event]]:
        """The batch in one transaction on the writer's own psycopg connection (kept: no pool checkout, no
        pre-ping per batch; dropped after a failure and opened again for the next batch)."""
        now = time.monotonic()
        expire = now - self._last_expiry >= EXPIRE_EVERY_S
        if expire:
            self._last_expiry = now
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
            epoch = self.epoch_for(stream)
            if await (await db.execute(self._sql.create, (stream, epoch, count))).fetchone() is not None:
                return epoch, count
            # Another process made the stream meanwhile: its row is there now.
        raise RuntimeError(f"the hub stream {stream} could be neither read nor made")

    def _expiry_cutoff(self) -> datetime:
        return utcnow() - timedelta(seconds=self.history_ttl_s)

    @finishes_when_cancelled
    async def position(self, stream: str) -> tuple[str, int]:
        """Where the stream stands: what this process handed out last if it hands out the stream's offsets now
        (SQLite), else read from the database: another process on the same database may have published to it
        since this one last looked. On SQLite the read is on the loop's own connection (a point read: tens of
        microseconds, where a trip through the async driver cost ~1 ms, twice per WebSocket connect)."""
        if self.sqlite is not None:
            known = self.sqlite.position(stream)
            if known is not None:
                return known
            async with self.sqlite.reading():
                known = self.sqlite.read_position_here(stream)
                if known is not None:
                    return known
                return await self._read_position(stream)
        return await self._read_position(stream)

    async def _read_position(self, stream: str) -> tuple[str, int]:
        async with self.engine.begin() as conn:
            return await conn.run_sync(self._position, stream)

    @finishes_when_cancelled
    async def history(self, stream: str, after: int) -> History:
        if self.sqlite is None:
            return await self._read_history(stream, after)
        async with self.sqlite.reading():  # what was delivered is in the database before it is read
            return await self._read_history(stream, after)

    async def _read_history(self, stream: str, after: int) -> History:
        cutoff = utcnow() - timedelta(seconds=self.history_ttl_s)
        async with self.engine.begin() as conn:
            epoch, last = await conn.run_sync(self._position, stream)
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

    def _position(self, conn: sa.Connection, stream: str) -> tuple[str, int]:
        """A stream's (epoch, last offset); (its derived epoch, 0) for a stream without a row."""
        query = sa.select(hub_streams.c.epoch, hub_streams.c.last_offset).where(hub_streams.c.name == stream)
        row = conn.execute(query).first()
        return (str(row.epoch), int(row.last_offset)) if row is not None else (self.epoch_for(stream), 0)
