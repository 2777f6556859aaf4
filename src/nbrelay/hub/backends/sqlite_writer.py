"""How the sql:// hub publishes on SQLite (the embedded default): journal, deliver, then write to the database in
groups.

A publish takes its stream's next offset from what this process knows (it holds the journal's lock, so nobody else
hands out offsets meanwhile), appends one record to the journal (one `write`, no disk flush), hands the events to
the subscribers and returns. A group of records goes to the database every `commit_window_s` (or sooner when 500
wait), in one transaction on the event loop's own connection when SQLite's write lock is free, on the writer
thread (which waits for it) when the job store holds it. Once the database has a group, its journal file is
cleared, and once nothing waits, the lock is let go, so another process on the same file may publish.

What a crash keeps is in docs/protocol.md ("What survives a crash"); the journal's files in sqlite_journal.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL

from nbrelay.errors import HubUnavailable
from nbrelay.hub.backends.base import Deliver
from nbrelay.hub.backends.sql_batch import EXPIRE_EVERY_S, Publish, Statements, sqlite_ts, trims
from nbrelay.hub.backends.sqlite_journal import Journal, Placement, Record, Taken, encode
from nbrelay.models import Event
from nbrelay.store.loop_sqlite import LoopSqlite, is_busy
from nbrelay.store.sql import sqlite_pragmas

COMMIT_WINDOW_S = 0.1  # the longest a published event waits in the journal for the database
_MAX_GROUP = 500  # records written in one transaction, at most (the job store waits for the same lock)
_MAX_UNWRITTEN = 10_000  # records waiting for the database, at most; beyond it publishers wait for room
_CHECKPOINT_EVERY = 200  # groups on the loop's connection between checkpoints (~1000 pages, as SQLite's own)
_LOCK_TRY_MS = 1000  # the writer thread's wait for SQLite's write lock per try (a warning after each)
_RETRY_MAX_S = 2.0  # the longest pause before a group the database refused is tried again

_SQL = Statements(postgres=False)  # the statements this writer shares with PostgreSQL's, in SQLite's style
# Idempotent, so that records written again after a crash (the database had them, the journal not yet cleared)
# change nothing: a stream's last offset only rises, and only within its epoch.
_UPSERT_STREAM = (
    "INSERT INTO hub_streams (name, epoch, last_offset) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
    "SET last_offset = max(hub_streams.last_offset, excluded.last_offset) WHERE hub_streams.epoch = excluded.epoch"
)
_INSERT_EVENT = 'INSERT OR IGNORE INTO hub_events (stream, "offset", type, data, ts) VALUES (?, ?, ?, ?, ?)'

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Unwritten:
    segment: int  # the journal file its record is in
    record: Record


class SqliteWriter:
    def __init__(
        self,
        url: URL,
        where: str,
        *,
        history_size: int,
        lock_wait_s: float,
        commit_window_s: float,
        expiry_cutoff: Callable[[], datetime],
        epoch_for: Callable[[str], str],
    ):
        assert url.database
        self.where = where
        self.history_size = history_size
        self.lock_wait_s = lock_wait_s
        self.commit_window_s = commit_window_s
        self._expiry_cutoff = expiry_cutoff
        self._epoch_for = epoch_for
        self.journal = Journal(Path(url.database))
        self._here = LoopSqlite(url, sqlite_pragmas)
        self._sync_engine = sa.create_engine(url.set(drivername="sqlite"), pool_size=1)
        sa.event.listen(self._sync_engine, "connect", sqlite_pragmas)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-writer")
        self._db: Any = None  # the writer thread's sqlite3 connection (a pool checkout kept until close)
        self._deliver: Deliver | None = None
        # (epoch, last offset handed out) per stream: exact while this process holds the lock and nobody else held
        # it since these were read (Journal.try_lock says).
        self.known: dict[str, tuple[str, int]] = {}
        self._replay = False  # records of a process that died are in the journal: to the database first
        self._unwritten: list[_Unwritten] = []
        self._in_segment = [0, 0]  # records of each journal file that the database does not have yet
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None  # a group on its way through the writer thread
        self._refused: BaseException | None = None  # why the database refused the last group (cleared on success)
        self._failures = 0
        self._written = asyncio.Event()  # set whenever a group was written or refused
        # Publishes that could not be placed at once (the lock is another process's, room or a read is awaited):
        # placed in call order by one task, and nothing is placed at once while any waits.
        self._waiting: deque[Publish] = deque()
        self._placer: asyncio.Task[None] | None = None
        self._last_expiry = time.monotonic()
        self._groups_here = 0

    # life cycle -------------------------------------------------------------------------------------------------
    async def start(self, deliver: Deliver) -> None:
        """Open the journal and write what a process that died left in it (waiting for the lock if another process
        holds it), so that reads see everything ever delivered."""
        self.journal.open()
        taken = await self._in_thread(self._lock_waiting)
        self._took(taken)
        if self._replay:
            await self._in_thread(self._write_leftovers_waiting)
        if not self._unwritten:
            self.journal.unlock()
        self._deliver = deliver

    async def close(self) -> None:
        """Place what waits, write everything to the database, let go (what cannot be written stays in the journal
        for the next process)."""
        while self._placer is not None and not self._placer.done():
            await asyncio.wait({self._placer})
        try:
            await self.flush()
        except HubUnavailable as exc:
            log.error("%s; the journal keeps them for the next start", exc)
        self._deliver = None
        if self._timer is not None:
            self._timer.cancel()
        self._here.close()
        if self._db is not None:
            await self._in_thread(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)
        self.journal.close()
        self._sync_engine.dispose()

    # publishing -------------------------------------------------------------------------------------------------
    async def publish(self, event: Event, streams: Sequence[str]) -> list[Event]:
        # Encoded here, once for all its streams: an event that cannot be encoded fails its own publisher only.
        data_json = event.data_json()
        try:
            ready = not self._waiting and self._ready_here(streams)
        except Exception as exc:  # the database refused a read or the write-back of a dead process's journal
            self._let_go_if_idle()
            raise self._unavailable("publish", exc) from exc
        if ready:
            return self._place(event, streams, data_json)
        item = Publish(event, tuple(streams), data_json, asyncio.get_running_loop().create_future())
        self._waiting.append(item)
        if self._placer is None or self._placer.done():
            self._placer = asyncio.get_running_loop().create_task(self._place_waiting())
        return await item.done

    def _ready_here(self, streams: Sequence[str]) -> bool:
        """Whether the streams' next offsets can be handed out now, without waiting: the lock is this process's,
        nothing is left to write back, every stream's position is known and there is room."""
        if len(self._unwritten) >= _MAX_UNWRITTEN:
            return False
        if not self.journal.held:
            taken = self.journal.try_lock()
            if taken is None:
                return False
            self._took(taken)
        if self._replay and not self._write_leftovers_here():
            return False
        return all(stream in self.known or self._load_here(stream) for stream in streams)

    async def _ready(self, streams: Sequence[str]) -> None:
        """Wait until _ready_here holds: for room, for the lock, for SQLite."""
        while not self._ready_here(streams):
            if len(self._unwritten) >= _MAX_UNWRITTEN:
                await self.flush()
            elif not self.journal.held:
                self._took(await self._in_thread(self._lock_waiting))
            elif self._replay:
                await self._in_thread(self._write_leftovers_waiting)
            else:
                missing = [stream for stream in streams if stream not in self.known]
                self.known.update(await self._in_thread(self._load_waiting, missing))

    async def _place_waiting(self) -> None:
        try:
            while self._waiting:
                item = self._waiting[0]
                try:
                    await self._ready(item.streams)
                    placed = self._place(item.event, item.streams, item.data_json)
                except Exception as exc:
                    self._waiting.popleft()
                    item.answer(error=self._unavailable("publish", exc))
                    self._let_go_if_idle()
                    continue
                self._waiting.popleft()
                item.answer(placed)
        except BaseException as exc:  # cancelled (the loop ends): nobody may wait for ever
            for item in self._waiting:
                item.answer(error=self._unavailable("publish", exc))
            self._waiting.clear()
            raise

    def _place(self, event: Event, streams: Sequence[str], data_json: str) -> list[Event]:
        """The next offsets, the record in the journal, the events to the subscribers."""
        taken: dict[str, tuple[str, int]] = {}
        placements: list[Placement] = []
        for stream in streams:
            epoch, offset = taken.get(stream) or self.known[stream]
            taken[stream] = (epoch, offset + 1)
            placements.append((stream, offset + 1, epoch))
        ts = sqlite_ts(event.ts)
        try:
            segment = self.journal.append(encode(ts, event.type, placements, data_json))
        except OSError as exc:
            self._let_go_if_idle()
            raise self._unavailable("publish", exc) from exc
        self.known.update(taken)
        self._unwritten.append(_Unwritten(segment, Record(ts, event.type, placements, data_json)))
        self._in_segment[segment] += 1
        if len(self._unwritten) >= _MAX_GROUP and self._writing is None and self._refused is None:
            self._write_now()
        elif self._timer is None and self._writing is None:
            self._timer = asyncio.get_running_loop().call_later(self.commit_window_s, self._write_now)
        placed = [event.positioned(stream, offset, epoch) for stream, offset, epoch in placements]
        if self._deliver is not None:
            for positioned in placed:
                self._deliver(positioned)
        return placed

    def position(self, stream: str) -> tuple[str, int] | None:
        """Where the stream stands if this process hands out offsets now: what it handed out last, or, for a stream
        it has not published on since it took the lock, the database (nobody else writes meanwhile). None when the
        lock is not this process's, or the read could not be had at once."""
        if not self.journal.held:
            return None
        return self.known.get(stream) or self.read_position_here(stream)

    @contextlib.asynccontextmanager
    async def reading(self) -> AsyncIterator[None]:
        """Within: the database has every event delivered so far, by this process or another. This one's are written
        first; another's, by waiting for the lock (that process lets go once it has written them), and what a
        process that died left in the journal is written back."""
        if self.journal.held:
            await self.flush()
        if not self.journal.held:
            await self._ready(())
        try:
            yield
        finally:
            self._let_go_if_idle()

    # writing to the database ------------------------------------------------------------------------------------
    def _write_now(self) -> None:
        """Send the unwritten records to the database: here if SQLite's lock is free, else on the writer thread."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writing is not None or not self._unwritten:
            return
        group = self._unwritten[:_MAX_GROUP]
        del self._unwritten[:_MAX_GROUP]
        self.journal.switch(self._in_segment)
        expire = time.monotonic() - self._last_expiry >= EXPIRE_EVERY_S
        if not expire:
            try:
                if self._write_here([u.record for u in group]):
                    self._done(group, None)
                    return
            except Exception as exc:
                self._done(group, exc)
                return
        else:
            self._last_expiry = time.monotonic()
        self._writing = asyncio.get_running_loop().create_task(self._write_in_thread(group, expire))

    async def _write_in_thread(self, group: list[_Unwritten], expire: bool) -> None:
        error: BaseException | None = None
        try:
            await self._in_thread(self._write_waiting, [u.record for u in group], expire)
        except Exception as exc:
            error = exc
        finally:
            self._writing = None
        self._done(group, error)

    def _done(self, group: list[_Unwritten], error: BaseException | None) -> None:
        """After a group's transaction: clear what the database has, or keep the group for another try."""
        if error is not None:
            self._unwritten[:0] = group
            self._refused = error
            self._failures += 1
            delay = min(_RETRY_MAX_S, self.commit_window_s * 2**self._failures)
            log.error(
                "the hub could not write %d event(s) to %s (kept in its journal, tried again in %.2f s): %r",
                len(group),
                self.where,
                delay,
                error,
            )
            self._timer = asyncio.get_running_loop().call_later(delay, self._write_now)
        else:
            self._refused = None
            self._failures = 0
            for unwritten in group:
                self._in_segment[unwritten.segment] -= 1
            for segment, count in enumerate(self._in_segment):
                if count == 0:
                    self.journal.clear(segment)
            if self._unwritten:
                if len(self._unwritten) >= _MAX_GROUP:
                    self._write_now()
                elif self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(self.commit_window_s, self._write_now)
            else:
                self._let_go_if_idle()
        self._written.set()
        self._written = asyncio.Event()

    def _let_go_if_idle(self) -> None:
        """Let another process publish once nothing of this one waits for the database."""
        if self.journal.held and not self._unwritten and self._writing is None:
            self.journal.unlock()

    async def flush(self) -> None:
        """Write everything published so far to the database; HubUnavailable if it refuses."""
        while self._unwritten or self._writing is not None:
            written = self._written
            if self._writing is None:
                self._write_now()
            if self._writing is not None or not written.is_set():
                await written.wait()
            if self._refused is not None:
                raise self._unavailable("write", self._refused)

    def _write_here(self, records: list[Record]) -> bool:
        """The records in one transaction on the loop's own connection, if SQLite's write lock is free now."""
        db = self._here.dbapi
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return False
            raise
        self._transaction(db, records, expire=False)
        self._groups_here += 1
        if self._groups_here % _CHECKPOINT_EVERY == 0:
            self._thread.submit(self._checkpoint)
        return True

    def _write_waiting(self, records: list[Record], expire: bool) -> None:
        """The group on the writer thread's connection, waiting for SQLite's write lock."""
        db = self._writer_db()
        self._begin_waiting(db, len(records))
        self._transaction(db, records, expire)

    def _transaction(self, db: Any, records: list[Record], expire: bool) -> None:
        """The records' statements and the commit, on `db`, which has begun its transaction (BEGIN IMMEDIATE)."""
        try:
            last: dict[str, tuple[str, int]] = {}
            counts: dict[str, int] = {}
            rows = []
            for record in records:
                for stream, offset, epoch in record.placements:
                    rows.append((stream, offset, record.type, record.data_json, record.ts))
                    counts[stream] = counts.get(stream, 0) + 1
                    if offset > last.get(stream, ("", 0))[1]:
                        last[stream] = (epoch, offset)
            db.executemany(_UPSERT_STREAM, [(stream, epoch, offset) for stream, (epoch, offset) in last.items()])
            db.executemany(_INSERT_EVENT, rows)
            for stream, upto in trims(counts, last, self.history_size):
                db.execute(_SQL.trim, (stream, upto))
            if expire:
                db.execute(_SQL.expire, (sqlite_ts(self._expiry_cutoff()),))
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _checkpoint(self) -> None:
        """Copy the write-ahead log into the database (on the writer thread), as SQLite would at a commit."""
        self._writer_db().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _writer_db(self) -> Any:
        """The writer thread's sqlite3 connection (opened on its first use)."""
        if self._db is None:
            self._db = self._sync_engine.raw_connection()
            self._db.driver_connection.execute(f"PRAGMA busy_timeout = {_LOCK_TRY_MS}")
        return self._db.driver_connection

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

    # taking the lock, reading positions, writing back what a dead process left --------------------------------
    def _lock_waiting(self) -> Taken:
        def waited(seconds: float) -> None:
            lock = self.journal.lock_path
            log.warning("the hub has waited %.1f s for another process to let go of %s", seconds, lock)

        try:
            return self.journal.lock_waiting(self.lock_wait_s, waited)
        except TimeoutError as exc:
            raise HubUnavailable(
                f"the hub could not take {self.journal.lock_path}: {exc}",
                hint="another process publishes on this database and does not let go: is a second server running "
                "on the same data folder? (several nodes share a hub through redis://)",
            ) from exc

    def _took(self, taken: Taken) -> None:
        if taken.others_wrote:
            self.known.clear()
        if taken.leftovers:
            self._replay = True

    def read_position_here(self, stream: str) -> tuple[str, int] | None:
        """(epoch, last offset) of the stream in the database, read on the loop's connection; None if the read
        could not be had at once (a WAL reader waits only in rare cases, such as the log being reset)."""
        try:
            return self._read_position(self._here.dbapi, stream)
        except sqlite3.OperationalError as exc:
            if is_busy(exc):
                return None
            raise

    def _read_position(self, db: Any, stream: str) -> tuple[str, int]:
        """(epoch, last offset) of the stream as `db` has it; (its derived epoch, 0) for a stream without a row."""
        row = db.execute(_SQL.position, (stream,)).fetchone()
        return (str(row[0]), int(row[1])) if row is not None else (self._epoch_for(stream), 0)

    def _load_here(self, stream: str) -> bool:
        found = self.read_position_here(stream)
        if found is not None:
            self.known[stream] = found
        return found is not None

    def _load_waiting(self, streams: list[str]) -> dict[str, tuple[str, int]]:
        db = self._writer_db()
        found = {stream: self._read_position(db, stream) for stream in streams}
        db.rollback()  # end the read transaction: it would keep an old snapshot of the log
        return found

    def _write_leftovers_here(self) -> bool:
        """Write back what a process that died left in the journal (they were delivered), on the loop's connection
        if SQLite's write lock is free now; False if it is not."""
        records = self.journal.leftovers()
        if records and not self._write_here(records):
            return False
        self._wrote_leftovers(len(records))
        return True

    def _write_leftovers_waiting(self) -> None:
        """The same on the writer thread, waiting for SQLite's write lock."""
        records = self.journal.leftovers()
        if records:
            self._write_waiting(records, False)
        self._wrote_leftovers(len(records))

    def _wrote_leftovers(self, count: int) -> None:
        if count:
            log.warning("the hub wrote %d event(s) left in its journal by a process that stopped", count)
        self.journal.clear(0)
        self.journal.clear(1)
        self.known.clear()
        self._replay = False

    async def _in_thread(self, work: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)

    def _unavailable(self, what: str, exc: BaseException) -> HubUnavailable:
        if what == "publish":
            return HubUnavailable(
                f"the hub could not publish to its database at {self.where}: {exc!r:.300}",
                hint="the event was not published; the server's log and the database say why",
            )
        return HubUnavailable(
            f"the hub could not write its events to its database at {self.where}: {exc!r:.300}",
            hint="they were delivered and are kept in the hub's journal; the server's log and the database say why",
        )
