"""What the sql:// hub promises beyond the HubBackend contract (tests/hub/test_hub.py). On SQLite and PostgreSQL:
publishes of one moment share a transaction, close() writes what was published before it. PostgreSQL: a failed
transaction fails each of its publishers and keeps everything acknowledged before it. SQLite (journal first): a
publish never waits for the database, and what the database refuses or a lock delays is written later, all of it.
What a process that dies leaves in the journal: tests/hub/test_sqlite_journal.py."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from nbrelay.errors import HubUnavailable
from nbrelay.hub import Hub, open_hub
from nbrelay.hub.backends.sql import SqlBackend
from nbrelay.hub.backends.sqlite_writer import _LOCK_TRY_MS
from tests.conftest import fresh_postgres_url
from tests.hub.test_hub import has, publish, received


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    with ExitStack() as resources:
        if request.param == "postgres":
            yield resources.enter_context(fresh_postgres_url())
        else:
            yield f"sqlite:///{tmp_path / 'hub.db'}"


async def opened(database: str, commit_window_s: float | None = None) -> Hub:
    hub = open_hub("sql://", database_url=database, history_size=500, history_ttl_s=3600, subscriber_queue_size=1000)
    if commit_window_s is not None:
        assert isinstance(hub.backend, SqlBackend) and hub.backend.sqlite is not None
        hub.backend.sqlite.commit_window_s = commit_window_s
    await hub.start()
    return hub


def admin_sql(database: str, statement: str) -> None:
    """Run `statement` on the hub's database from another connection, as an operator (or a fault) would."""
    url = make_url(database)
    if url.get_backend_name() == "sqlite":
        with sqlite3.connect(str(url.database)) as db:
            db.execute(statement)
        return
    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False)) as db:
        db.execute(statement)


def counting_transactions(backend: SqlBackend) -> list[int]:
    """The number of events of each transaction written from now on (a wrapper around the real write)."""
    sizes: list[int] = []
    if backend.sqlite is not None:
        writer = backend.sqlite
        transaction: Callable[..., Any] = writer._transaction

        def counted_here(db: Any, records: list[Any], expire: bool) -> Any:
            sizes.append(sum(len(r.placements) for r in records))
            return transaction(db, records, expire)

        writer._transaction = counted_here  # type: ignore[method-assign]
        return sizes
    write: Callable[..., Any] = backend._write_postgres

    async def counted(batch: list[Any]) -> Any:
        sizes.append(sum(len(item.streams) for item in batch))
        return await write(batch)

    backend._write_postgres = counted  # type: ignore[method-assign]
    return sizes


async def test_publishes_of_one_moment_share_one_transaction(database: str) -> None:
    hub = await opened(database)
    try:
        assert isinstance(hub.backend, SqlBackend)
        sizes = counting_transactions(hub.backend)
        placed = await asyncio.gather(*(publish(hub, f"user:u{i % 7}", n=i) for i in range(100)))
        await hub.resume("user:u0", "x:0")  # a read: what was published is in the database first
        assert sum(sizes) == 100 and len(sizes) <= 2, sizes
        assert sorted(e.offset or 0 for e in placed if e.stream == "user:u0") == list(range(1, 16))
    finally:
        await hub.close()


@pytest.mark.postgres
async def test_postgres_a_failed_transaction_fails_each_publisher_and_loses_nothing_acknowledged() -> None:
    """A real fault: the events table is renamed away under the running hub, so the batch's INSERT fails after
    its offsets were taken. Every publisher of the batch gets HubUnavailable; the offsets are not used up; what was
    acknowledged before is all there, and publishing goes on once the table is back."""
    with fresh_postgres_url() as database:
        await _fails_each_publisher_and_loses_nothing_acknowledged(database)


async def _fails_each_publisher_and_loses_nothing_acknowledged(database: str) -> None:
    hub = await opened(database)
    try:
        sub = hub.subscription()
        await hub.follow(sub, "user:a")
        acknowledged = [await publish(hub, "user:a", n=i) for i in range(3)]
        admin_sql(database, "ALTER TABLE hub_events RENAME TO hub_events_away")
        failed = await asyncio.gather(*(publish(hub, "user:a", n=10 + i) for i in range(5)), return_exceptions=True)
        assert all(isinstance(f, HubUnavailable) for f in failed), failed
        assert all("could not write 5 event(s) to its database" in str(f) for f in failed)
        admin_sql(database, "ALTER TABLE hub_events_away RENAME TO hub_events")
        after = await publish(hub, "user:a", n=99)
        assert after.offset == 4 and after.epoch == acknowledged[0].epoch
        kept = (await hub.resume("user:a", f"{after.epoch}:0")).events
        assert [(e.offset, e.data["n"]) for e in kept] == [(1, 0), (2, 1), (3, 2), (4, 99)]
        assert [e.data["n"] for e in await received(sub, has(4))] == [0, 1, 2, 99]  # nothing of the failed batch
    finally:
        await hub.close()


async def test_sqlite_the_database_refusing_a_group_loses_nothing_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same fault on SQLite: the publishes are delivered (journaled first), the group the database refuses is
    kept and tried again, a read meanwhile says why it cannot answer, and once the table is back the database
    has every event, in order, at the offsets delivered."""
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = await opened(database, commit_window_s=0.01)
    try:
        sub = hub.subscription()
        await hub.follow(sub, "user:a")
        before = [await publish(hub, "user:a", n=i) for i in range(3)]
        await hub.resume("user:a", before[0].id or "")  # written
        admin_sql(database, "ALTER TABLE hub_events RENAME TO hub_events_away")
        during = [await publish(hub, "user:a", n=10 + i) for i in range(5)]
        assert [e.offset for e in during] == [4, 5, 6, 7, 8]
        assert [e.data["n"] for e in await received(sub, has(8))] == [0, 1, 2, 10, 11, 12, 13, 14]
        with pytest.raises(HubUnavailable, match="could not write its events"):
            await hub.resume("user:a", before[0].id or "")
        assert any("kept in its journal" in r.getMessage() for r in caplog.records)
        admin_sql(database, "ALTER TABLE hub_events_away RENAME TO hub_events")
        after = await publish(hub, "user:a", n=99)
        assert after.offset == 9 and after.epoch == before[0].epoch
        kept = (await hub.resume("user:a", f"{after.epoch}:0")).events
        numbers = [0, 1, 2, 10, 11, 12, 13, 14, 99]
        assert [(e.offset, e.data["n"]) for e in kept] == list(zip(range(1, 10), numbers, strict=True))
    finally:
        await hub.close()


async def test_close_writes_what_was_published_before_it(database: str) -> None:
    hub = await opened(database)
    tasks = [asyncio.create_task(publish(hub, "user:a", n=i)) for i in range(50)]
    await asyncio.sleep(0)  # every publish is made (queued), none written yet
    await hub.close()
    assert [t.result().offset for t in tasks] == list(range(1, 51))
    with pytest.raises(HubUnavailable, match="closing"):
        await publish(hub, "user:a")
    again = await opened(database)
    try:
        resume = await again.resume("user:a", f"{tasks[0].result().epoch}:0")
        assert resume.recovered and [e.data["n"] for e in resume.events] == list(range(50))
    finally:
        await again.close()


def written(path: Path, stream: str) -> list[int]:
    """The offsets of `stream` in the database at `path`, read by another connection."""
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute('SELECT "offset" FROM hub_events WHERE stream = ? ORDER BY 1', (stream,))]


async def test_sqlite_a_publish_while_another_connection_writes_is_delivered_at_once(tmp_path: Path) -> None:
    """The job store holds SQLite's write lock (here: another connection in BEGIN IMMEDIATE): the publish does not
    wait for it. Its event is delivered and answered at once; the database gets it from the writer thread, which
    waits for the lock, once it is free (the event loop stays free meanwhile)."""
    path = tmp_path / "hub.db"
    hub = await opened(f"sqlite:///{path}", commit_window_s=0.01)
    try:
        sub = hub.subscription()
        await hub.follow(sub, "user:a")
        first = await publish(hub, "user:a", n=0)
        await hub.resume("user:a", first.id or "")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            second = await asyncio.wait_for(publish(hub, "user:a", n=1), 1)
            assert second.id == f"{first.epoch}:2"
            assert [e.offset for e in await received(sub, has(2))] == [1, 2]
            await asyncio.sleep(0.3)  # the loop runs meanwhile; the group waits for the lock
            assert written(path, "user:a") == [1]
            other.execute("COMMIT")
        finally:
            other.close()
        for _ in range(100):
            if written(path, "user:a") == [1, 2]:
                break
            await asyncio.sleep(0.02)
        assert written(path, "user:a") == [1, 2]
    finally:
        await hub.close()


@pytest.mark.parametrize("lock_wait_s", [30.0, 0.5])
async def test_sqlite_a_lock_held_past_one_try_is_waited_out_and_nothing_is_lost(
    tmp_path: Path, lock_wait_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds the write lock for 2.5 tries of the writer thread: with the default wait the group
    is written once the lock is free (a warning per try says so); with a shorter wait the database refuses it,
    and it is kept and written at a later try. Either way the publish was answered at once."""
    path = tmp_path / "hub.db"
    hub = await opened(f"sqlite:///{path}", commit_window_s=0.01)
    try:
        assert isinstance(hub.backend, SqlBackend) and hub.backend.sqlite is not None
        hub.backend.sqlite.lock_wait_s = lock_wait_s
        first = await publish(hub, "user:a", n=0)
        await hub.resume("user:a", first.id or "")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            second = await asyncio.wait_for(publish(hub, "user:a", n=1), 1)
            await asyncio.sleep(2.5 * _LOCK_TRY_MS / 1000)
            other.execute("COMMIT")
        finally:
            other.close()
        assert second.id == f"{first.epoch}:2"
        resume = await hub.resume("user:a", first.id or "")
        assert resume.recovered and [e.data["n"] for e in resume.events] == [1]
        if lock_wait_s > 2.5 * _LOCK_TRY_MS / 1000:
            assert sum("waited" in r.getMessage() for r in caplog.records) >= 2
        else:
            assert any("kept in its journal" in r.getMessage() for r in caplog.records)
    finally:
        await hub.close()


async def test_sqlite_a_stream_whose_position_cannot_be_read_fails_its_publish_and_uses_up_nothing(
    tmp_path: Path,
) -> None:
    """The streams table is renamed away: a publish to a stream this hub has not read yet cannot learn its position
    and fails with HubUnavailable, delivering nothing; once the table is back the stream starts at offset 1."""
    database = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = await opened(database)
    try:
        sub = hub.subscription()
        await hub.follow(sub, "user:new")
        admin_sql(database, "ALTER TABLE hub_streams RENAME TO hub_streams_away")
        with pytest.raises(HubUnavailable, match="could not publish"):
            await publish(hub, "user:new", n=0)
        admin_sql(database, "ALTER TABLE hub_streams_away RENAME TO hub_streams")
        placed = await publish(hub, "user:new", n=1)
        assert placed.offset == 1
        assert [e.data["n"] for e in await received(sub, has(1))] == [1]
    finally:
        await hub.close()
