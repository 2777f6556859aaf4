"""Short SQLite statements run on the event loop's own thread, for the calls made at every event of a job.

The async driver (aiosqlite) hands every statement, fetch and commit to a thread and back: ~1 ms of CPU for a
point read or a one-row update, where the statement itself takes tens of microseconds. This connection runs them
where the caller is, and never waits: its busy timeout is 0, so a statement that would wait for a lock (another
connection is writing) raises `Busy` at once, and the caller takes its async path, which does wait. It never
checkpoints either (a checkpoint may wait for the disk): the store's other connections do, as SQLite does at their
commits. SQLite in WAL mode: a read never waits for a writer, only a write does.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import StaticPool

T = TypeVar("T")

__all__ = ["Busy", "LoopSqlite", "is_busy"]


class Busy(Exception):
    """The statement would have had to wait for another connection's lock, or was asked for on another thread than
    the one the connection belongs to: nothing of it was done (the caller takes its async path)."""


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock (SQLITE_BUSY, SQLITE_LOCKED and their extended codes)."""
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class LoopSqlite:
    """One synchronous connection to the SQLite file at `url` (an async or sync SQLite URL), opened at first use
    with `on_connect` (the store's pragmas) and then made never to wait. Not thread-safe: the loop's thread only."""

    def __init__(self, url: URL, on_connect: Callable[[Any, Any], None]) -> None:
        self._engine = sa.create_engine(url.set(drivername="sqlite"), poolclass=StaticPool)
        self._on_connect = on_connect
        sa.event.listen(self._engine, "connect", self._prepare)
        self._conn: sa.Connection | None = None
        self._thread: int | None = None  # the thread that opened the connection, the only one to use it

    def _prepare(self, dbapi_connection: Any, record: Any) -> None:
        self._on_connect(dbapi_connection, record)
        dbapi_connection.execute("PRAGMA busy_timeout = 0")
        dbapi_connection.execute("PRAGMA wal_autocheckpoint = 0")

    @property
    def connection(self) -> sa.Connection:
        if self._conn is None:
            self._conn = self._engine.connect()
            self._thread = threading.get_ident()
        return self._conn

    @property
    def dbapi(self) -> Any:
        """The sqlite3 connection underneath, for statements run without SQLAlchemy."""
        return self.connection.connection.driver_connection

    def run(self, work: Callable[[sa.Connection], T]) -> T:
        """`work` in one transaction, committed; `Busy` (rolled back) if it would have waited for a lock."""
        if self._thread is not None and self._thread != threading.get_ident():
            raise Busy("the connection belongs to another thread")
        conn = self.connection
        try:
            with conn.begin():
                return work(conn)
        except OperationalError as exc:
            if isinstance(exc.orig, sqlite3.OperationalError) and is_busy(exc.orig):
                raise Busy(str(exc.orig)) from exc
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()
