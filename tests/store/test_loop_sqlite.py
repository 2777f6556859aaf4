"""SQLite statements on the loop's own connection: done at once, or not at all (Busy) when they would wait; the job
store then takes its async path, which waits for the lock."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from nbrelay.models import JobState, transition
from nbrelay.store import NewJob
from nbrelay.store.loop_sqlite import Busy, LoopSqlite
from nbrelay.store.notifications import NotificationStore
from nbrelay.store.sql import SqlJobStore, engine_url, jobs, sqlite_pragmas
from tests.store.locks import held_by_another_thread, write_lock


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqlJobStore]:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.start()
    try:
        yield store
    finally:
        await store.close()


def db_path(store: SqlJobStore) -> str:
    assert store.url.database is not None
    return store.url.database


def progress_of(path: str, job_id: int) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        row = conn.execute("SELECT progress_cell, progress_total FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return int(row[0]), int(row[1])


async def test_a_write_that_would_wait_is_refused_at_once_and_leaves_nothing(sqlite_store: SqlJobStore) -> None:
    job = await sqlite_store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
    here = LoopSqlite(engine_url(str(sqlite_store.url)), sqlite_pragmas)
    update = jobs.update().where(jobs.c.id == job.id).values(progress_cell=7, progress_total=9)
    try:
        with write_lock(db_path(sqlite_store)):
            with pytest.raises(Busy):
                here.run(lambda conn: conn.execute(update))
            # A read does not wait for a writer (WAL).
            assert here.run(lambda conn: conn.execute(sa.select(jobs.c.id).where(jobs.c.id == job.id)).scalar())
        assert progress_of(db_path(sqlite_store), job.id) == (0, 0)
        here.run(lambda conn: conn.execute(update))  # the lock is free again: done, and committed
        assert progress_of(db_path(sqlite_store), job.id) == (7, 9)
    finally:
        here.close()


async def test_progress_written_while_another_connection_writes_waits_for_it(sqlite_store: SqlJobStore) -> None:
    job = await sqlite_store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
    path = db_path(sqlite_store)
    with held_by_another_thread(path):
        update = asyncio.ensure_future(sqlite_store.update_progress(job.id, 3, 4))
        await asyncio.sleep(0.3)
        assert not update.done()  # waiting for the lock on the async path, the loop free meanwhile
        assert progress_of(path, job.id) == (0, 0)
    await asyncio.wait_for(update, 10)
    assert progress_of(path, job.id) == (3, 4)
    assert (await sqlite_store.get_job(job.id)).progress_cell == 3  # type: ignore[union-attr]


async def test_a_job_read_on_the_loop_equals_the_async_drivers(sqlite_store: SqlJobStore) -> None:
    job = await sqlite_store.add_job(
        NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3", parameters={"x": [1, {"y": None}]})
    )
    assert await sqlite_store.save(transition(job, JobState.RUNNING), expect_state=JobState.QUEUED)
    here = await sqlite_store.get_job(job.id)
    (through_driver,) = await sqlite_store.get_jobs([job.id])
    assert here == through_driver
    assert here is not None and here.started_at is not None and here.started_at.utcoffset() is not None
    assert await sqlite_store.get_job(job.id + 1000) is None


async def test_a_jobs_end_saved_while_another_connection_writes_waits_and_keeps_its_outbox(
    sqlite_store: SqlJobStore,
) -> None:
    notes = NotificationStore(sqlite_store.engine)
    await notes.add_webhook("alice", "http://a.example/", ["job.succeeded"], schedule_id=None, secret="whsec_x")
    job = await sqlite_store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
    running = transition(job, JobState.RUNNING)
    assert await sqlite_store.save(running, expect_state=JobState.QUEUED)
    path = db_path(sqlite_store)
    with held_by_another_thread(path):
        save = asyncio.ensure_future(
            sqlite_store.save(transition(running, JobState.SUCCEEDED), expect_state=JobState.RUNNING)
        )
        added = asyncio.ensure_future(
            sqlite_store.add_job(NewJob(owner="bob", notebook="b.ipynb", kernel_name="python3"))
        )
        await asyncio.sleep(0.3)
        assert not save.done() and not added.done()
    assert await asyncio.wait_for(save, 10)
    assert (await asyncio.wait_for(added, 10)).id > job.id
    assert sqlite_store.outbox_writes == 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone() == ("succeeded",)
        assert conn.execute("SELECT COUNT(*) FROM deliveries WHERE job_id = ?", (job.id,)).fetchone() == (1,)


async def test_asked_from_another_thread_it_does_nothing_and_says_so(sqlite_store: SqlJobStore) -> None:
    here = LoopSqlite(engine_url(str(sqlite_store.url)), sqlite_pragmas)
    read = sa.select(sa.func.count()).select_from(jobs)
    try:
        assert here.run(lambda conn: conn.execute(read).scalar()) == 0  # opened on this thread

        def elsewhere() -> object:
            try:
                return here.run(lambda conn: conn.execute(read).scalar())
            except Busy as exc:
                return exc

        assert isinstance(await asyncio.to_thread(elsewhere), Busy)
    finally:
        here.close()
