"""What group commit in the sql:// hub promises beyond the HubBackend contract (tests/hub/test_hub.py), on
SQLite and PostgreSQL: publishes of one moment share a transaction, a failed transaction fails each of its
publishers and keeps everything acknowledged before it, and close() writes what was published before it."""

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
from nbrelay.hub.backends.sql import _LOCK_TRY_MS, SqlBackend
from tests.conftest import fresh_postgres_url
from tests.hub.test_hub import has, publish, received


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    with ExitStack() as resources:
        if request.param == "postgres":
            yield resources.enter_context(fresh_postgres_url())
        else:
            yield f"sqlite:///{tmp_path / 'hub.db'}"


async def opened(database: str) -> Hub:
    hub = open_hub("sql://", database_url=database, history_size=500, history_ttl_s=3600, subscriber_queue_size=1000)
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
    """The size of each batch written from now on (a wrapper around the real write)."""
    sizes: list[int] = []
    write: Callable[..., Any] = backend._write

    async def counted(batch: list[Any]) -> Any:
        sizes.append(len(batch))
        return await write(batch)

    backend._write = counted  # type: ignore[method-assign]
    return sizes


async def test_publishes_of_one_moment_share_one_transaction(database: str) -> None:
    hub = await opened(database)
    try:
        assert isinstance(hub.backend, SqlBackend)
        sizes = counting_transactions(hub.backend)
        placed = await asyncio.gather(*(publish(hub, f"user:u{i % 7}", n=i) for i in range(100)))
        assert sum(sizes) == 100 and len(sizes) <= 2, sizes
        assert sorted(e.offset or 0 for e in placed if e.stream == "user:u0") == list(range(1, 16))
    finally:
        await hub.close()


async def test_a_failed_transaction_fails_each_publisher_and_loses_nothing_acknowledged(database: str) -> None:
    """A real fault: the events table is renamed away under the running hub, so the batch's INSERT fails after
    its offsets were taken. Every publisher of the batch gets HubUnavailable; the offsets are not used up; what was
    acknowledged before is all there, and publishing goes on once the table is back."""
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


async def test_sqlite_a_publish_while_another_connection_writes_waits_off_the_loop(tmp_path: Path) -> None:
    """The job store holds SQLite's write lock (here: another connection in BEGIN IMMEDIATE): the batch is not
    written on the event loop, which stays free, but on the writer thread, which waits for the lock."""
    path = tmp_path / "hub.db"
    hub = await opened(f"sqlite:///{path}")
    try:
        first = await publish(hub, "user:a", n=0)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            pending = asyncio.create_task(publish(hub, "user:a", n=1))
            await asyncio.sleep(0.3)  # the loop runs meanwhile
            assert not pending.done()
            other.execute("COMMIT")
        finally:
            other.close()
        assert (await pending).id == f"{first.epoch}:2"
    finally:
        await hub.close()


@pytest.mark.parametrize("lock_wait_s", [30.0, 0.5])
async def test_sqlite_a_lock_held_past_one_try_is_waited_out_up_to_lock_wait_s(
    tmp_path: Path, lock_wait_s: float, caplog: pytest.LogCaptureFixture
) -> None:
    """Another connection holds the write lock for 2.5 tries of the writer thread: with the default wait the
    publish is written once the lock is free (a warning per try says so); with a shorter wait it fails, as
    HubUnavailable, and takes no offset."""
    path = tmp_path / "hub.db"
    hub = await opened(f"sqlite:///{path}")
    try:
        assert isinstance(hub.backend, SqlBackend)
        hub.backend.lock_wait_s = lock_wait_s
        first = await publish(hub, "user:a", n=0)
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            pending = asyncio.create_task(publish(hub, "user:a", n=1))
            await asyncio.sleep(2.5 * _LOCK_TRY_MS / 1000)
            other.execute("COMMIT")
        finally:
            other.close()
        if lock_wait_s > 2.5 * _LOCK_TRY_MS / 1000:
            assert (await pending).id == f"{first.epoch}:2"
            assert sum("waited" in r.getMessage() for r in caplog.records) >= 2
        else:
            with pytest.raises(HubUnavailable, match="database is locked"):
                await pending
            assert (await publish(hub, "user:a", n=2)).id == f"{first.epoch}:2"
    finally:
        await hub.close()
