"""The JobStore contract: every test that takes `store` or `db_url` runs unchanged on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

import nbrelay.store.sql as sql_module
from nbrelay.models import Job, JobError, JobState, transition
from nbrelay.store import NewJob, open_store
from nbrelay.store.sql import SqlJobStore, engine_url, metadata
from nbrelay.store.sql import _listing as sql_listing
from nbrelay.store.sql import _listing_params as sql_listing_params
from tests.conftest import free_port


def new(owner: str = "alice", notebook: str = "nb/a.ipynb", **kw: Any) -> NewJob:
    return NewJob(owner=owner, notebook=notebook, kernel_name="python3", **kw)


async def start(store: SqlJobStore, job: Job) -> Job:
    running = transition(job, JobState.RUNNING)
    assert await store.save(running, expect_state=JobState.QUEUED)
    return running


async def test_ping_returns_while_the_database_answers_and_raises_when_it_does_not(store: SqlJobStore) -> None:
    await store.ping()
    away = SqlJobStore(f"postgresql://nbrelay@127.0.0.1:{free_port()}/nobody")  # a port nothing listens on
    try:
        with pytest.raises((OSError, DBAPIError), match=r"refused|failed"):
            await away.ping()
    finally:
        await away.close()


async def test_add_and_get_round_trip(store: SqlJobStore) -> None:
    params = {"alpha": 0.5, "name": "x", "items": [1, 2, {"deep": None}], "flag": True}
    job = await store.add_job(new(parameters=params, timeout_s=60.0, cell_timeout_s=2.5))

    assert job.id > 0
    assert job.state is JobState.QUEUED
    assert job.created_at.tzinfo is not None
    got = await store.get_job(job.id)
    assert got == job
    assert got.parameters == params
    assert got.created_at.utcoffset() == timedelta(0)

    second = await store.add_job(new())
    assert second.id > job.id
    assert (await store.get_job(second.id)) == second
    assert second.parameters == {}
    assert second.timeout_s is None


async def test_get_jobs_reads_those_that_exist_in_id_order(store: SqlJobStore) -> None:
    a, b, c = [await store.add_job(new(notebook=f"{i}.ipynb")) for i in range(3)]
    await store.claim("w1", lease_s=None, job_id=b.id)
    found = await store.get_jobs([c.id, 999_999, a.id, b.id])
    assert [job.id for job in found] == [a.id, b.id, c.id]
    assert [job.state for job in found] == [JobState.QUEUED, JobState.RUNNING, JobState.QUEUED]
    assert await store.get_jobs([]) == []


async def test_get_missing_job(store: SqlJobStore) -> None:
    assert await store.get_job(999_999) is None


async def test_datetimes_come_back_aware_utc(store: SqlJobStore) -> None:
    job = await store.add_job(new())
    plus_two = timezone(timedelta(hours=2))
    started = datetime(2024, 5, 1, 14, 30, 15, 123456, tzinfo=plus_two)
    assert await store.save(transition(job, JobState.RUNNING, at=started), expect_state=JobState.QUEUED)

    got = await store.get_job(job.id)
    assert got is not None and got.started_at is not None
    assert got.started_at == started
    assert got.started_at.tzinfo == UTC
    assert got.started_at.hour == 12


async def test_list_jobs_filters_paging_and_order(store: SqlJobStore) -> None:
    a1 = await store.add_job(new("alice", "nb/a.ipynb"))
    b1 = await store.add_job(new("bob", "nb/a.ipynb"))
    a2 = await store.add_job(new("alice", "nb/b.ipynb"))
    a3 = await store.add_job(new("alice", "nb/a.ipynb"))
    await start(store, a1)
    a2_cancelled = transition(a2, JobState.CANCELLED)
    assert await store.save(a2_cancelled, expect_state=JobState.QUEUED)

    ids = lambda jobs: [j.id for j in jobs]  # noqa: E731
    assert ids(await store.list_jobs()) == [a3.id, a2.id, b1.id, a1.id]
    assert ids(await store.list_jobs(owner="alice")) == [a3.id, a2.id, a1.id]
    assert ids(await store.list_jobs(owner="nobody")) == []
    assert ids(await store.list_jobs(notebook="nb/a.ipynb")) == [a3.id, b1.id, a1.id]
    assert ids(await store.list_jobs(states=[JobState.QUEUED])) == [a3.id, b1.id]
    assert ids(await store.list_jobs(states={JobState.RUNNING, JobState.CANCELLED})) == [a2.id, a1.id]
    assert ids(await store.list_jobs(states=[])) == []
    assert ids(await store.list_jobs(owner="alice", states=[JobState.QUEUED], notebook="nb/a.ipynb")) == [a3.id]
    # Paging walks newest to oldest without gaps or repeats.
    assert ids(await store.list_jobs(limit=2)) == [a3.id, a2.id]
    assert ids(await store.list_jobs(limit=2, offset=2)) == [b1.id, a1.id]
    assert ids(await store.list_jobs(limit=2, offset=4)) == []
    listed = await store.list_jobs(owner="alice", states=[JobState.CANCELLED])
    assert listed == [a2_cancelled]


async def test_pages_of_several_states_are_those_of_one_list_newest_first(store: SqlJobStore) -> None:
    """With several states the listing merges one seek per state (sql._listing): its pages are exactly those of
    the one list of matching jobs, newest first, whatever the owner, notebook, limit and offset."""
    made: list[Job] = []
    for i in range(40):
        job = await store.add_job(new(("alice", "bob")[i % 2], ("nb/a.ipynb", "nb/b.ipynb")[i % 3 == 0]))
        if i % 5 == 1:
            job = await start(store, job)
        elif i % 5 == 2:
            job = await start(store, job)
            job = transition(job, JobState.SUCCEEDED)
            assert await store.save(job, expect_state=JobState.RUNNING)
        elif i % 5 == 3:
            job = transition(job, JobState.CANCELLED)
            assert await store.save(job, expect_state=JobState.QUEUED)
        made.append(job)
    unfinished = {JobState.QUEUED, JobState.RUNNING}
    for owner, notebook, states in [
        ("alice", None, unfinished),
        (None, None, unfinished),
        ("bob", "nb/a.ipynb", unfinished),
        ("alice", None, {JobState.QUEUED, JobState.SUCCEEDED, JobState.CANCELLED}),
        (None, None, set(JobState)),
    ]:
        expected = [
            j.id
            for j in sorted(made, key=lambda j: -j.id)
            if owner in (None, j.owner) and notebook in (None, j.notebook) and j.state in states
        ]
        for limit, offset in [(500, 0), (3, 0), (3, 3), (4, 5), (7, len(expected) - 2), (5, len(expected))]:
            got = await store.list_jobs(owner=owner, states=states, notebook=notebook, limit=limit, offset=offset)
            assert [j.id for j in got] == expected[offset : offset + limit], (owner, notebook, states, limit, offset)
            assert all(j == next(m for m in made if m.id == j.id) for j in got)  # whole jobs, as saved


async def test_an_owners_unfinished_jobs_are_sought_not_walked(tmp_path: Path) -> None:
    """On SQLite the push snapshot's listing (an owner's queued and running jobs) seeks (owner, state, id): before,
    SQLite walked (owner, id) through every job the owner ever ran, on every push connection. (SQLite's plan only:
    PostgreSQL plans by its statistics.)"""
    store = open_store(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.start()
    try:
        query = sql_listing(True, (JobState.QUEUED, JobState.RUNNING), False, False)
        params = sql_listing_params("alice", None, None, 500, 0)
        async with store.engine.connect() as conn:
            compiled = query.params(params).compile(conn.sync_engine, compile_kwargs={"literal_binds": True})
            plan = [row[3] for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")]
    finally:
        await store.close()
    searches = [step for step in plan if step.startswith("SEARCH")]
    assert len(searches) == 2 and all("ix_jobs_owner_state_id (owner=? AND state=?)" in step for step in searches)


async def test_count_jobs(store: SqlJobStore) -> None:
    assert await store.count_jobs() == 0
    a = await store.add_job(new("alice", "x.ipynb"))
    await store.add_job(new("alice", "y.ipynb"))
    await store.add_job(new("bob", "x.ipynb"))
    await start(store, a)

    assert await store.count_jobs() == 3
    assert await store.count_jobs(owner="alice") == 2
    assert await store.count_jobs(notebook="x.ipynb") == 2
    assert await store.count_jobs(states=[JobState.QUEUED]) == 2
    assert await store.count_jobs(states=[JobState.RUNNING, JobState.FAILED]) == 1
    assert await store.count_jobs(owner="alice", states=[JobState.QUEUED], notebook="y.ipynb") == 1
    assert await store.count_jobs(states=[]) == 0


async def test_save_with_matching_state_writes_every_field(store: SqlJobStore) -> None:
    job = await store.add_job(new())
    running = await start(store, job)
    done = transition(
        running,
        JobState.SUCCEEDED,
        progress_cell=7,
        progress_total=7,
        report_path="reports/1.html",
        output_path="outputs/1.ipynb",
    )
    assert await store.save(done, expect_state=JobState.RUNNING)
    assert await store.get_job(job.id) == done


async def test_save_with_stale_state_writes_nothing(store: SqlJobStore) -> None:
    job = await store.add_job(new())
    running = await start(store, job)

    # A second actor still holding the queued copy tries to cancel it.
    stale = transition(job, JobState.CANCELLED, report_path="should-not-land")
    assert not await store.save(stale, expect_state=JobState.QUEUED)
    assert await store.get_job(job.id) == running


async def test_save_missing_job_returns_false(store: SqlJobStore) -> None:
    ghost = Job(id=123_456, owner="x", notebook="x.ipynb", kernel_name="python3")
    assert not await store.save(ghost, expect_state=JobState.QUEUED)
    assert await store.get_job(ghost.id) is None


async def test_update_progress(store: SqlJobStore) -> None:
    job = await store.add_job(new())
    await start(store, job)
    await store.update_progress(job.id, 3, 10)

    got = await store.get_job(job.id)
    assert got is not None
    assert (got.progress_cell, got.progress_total) == (3, 10)
    assert got.state is JobState.RUNNING
    await store.update_progress(999_999, 1, 1)  # unknown job: silently nothing


async def test_cancel_requested(store: SqlJobStore) -> None:
    job = await store.add_job(new())
    other = await store.add_job(new())
    running = await start(store, job)
    await store.set_cancel_requested(job.id)

    got = await store.get_job(job.id)
    assert got is not None and got.cancel_requested
    assert got.state is JobState.RUNNING
    assert await store.get_job(other.id) == other

    # The runner saves its own (older) copy: the request must survive.
    assert await store.save(dataclasses.replace(running, progress_cell=1), expect_state=JobState.RUNNING)
    got = await store.get_job(job.id)
    assert got is not None and got.cancel_requested and got.progress_cell == 1


async def test_oldest_queued_is_fifo(store: SqlJobStore) -> None:
    jobs = [await store.add_job(new(notebook=f"{i}.ipynb")) for i in range(5)]
    await start(store, jobs[1])

    oldest = await store.oldest_queued(3)
    assert [j.id for j in oldest] == [jobs[0].id, jobs[2].id, jobs[3].id]
    assert oldest[0] == jobs[0]
    assert [j.id for j in await store.oldest_queued(10)] == [jobs[0].id, jobs[2].id, jobs[3].id, jobs[4].id]
    assert await store.oldest_queued(0) == []


async def test_queue_position(store: SqlJobStore) -> None:
    async def position(job_id: int) -> int | None:
        return (await store.queue_positions([job_id])).get(job_id)

    a, b, c = [await store.add_job(new()) for _ in range(3)]
    assert [await position(j.id) for j in (a, b, c)] == [1, 2, 3]
    assert await store.queue_positions(j.id for j in (c, a, b)) == {a.id: 1, b.id: 2, c.id: 3}

    await start(store, a)
    assert await position(a.id) is None
    assert [await position(j.id) for j in (b, c)] == [1, 2]

    assert await store.save(transition(b, JobState.CANCELLED), expect_state=JobState.QUEUED)
    assert await position(b.id) is None
    assert await position(c.id) == 1
    assert await position(999_999) is None


async def test_queue_positions_of_several_jobs_at_once(store: SqlJobStore) -> None:
    a, b, c, d = [await store.add_job(new()) for _ in range(4)]
    await start(store, b)
    assert await store.queue_positions([d.id, a.id, b.id, c.id, 999_999]) == {a.id: 1, c.id: 2, d.id: 3}
    assert await store.queue_positions([c.id, c.id]) == {c.id: 2}
    assert await store.queue_positions([]) == {}


async def test_jobs_in_state(store: SqlJobStore) -> None:
    a, b, c = [await store.add_job(new()) for _ in range(3)]
    ra = await start(store, a)
    rc = await start(store, c)

    assert await store.jobs_in_state(JobState.RUNNING) == [ra, rc]
    assert await store.jobs_in_state(JobState.QUEUED) == [b]
    assert await store.jobs_in_state(JobState.FAILED) == []


async def test_error_json_round_trip(store: SqlJobStore) -> None:
    job = await store.add_job(new())
    running = await start(store, job)
    error = JobError(
        reason="cell raised",
        cell=4,
        ename="ZeroDivisionError",
        evalue="division by zero",
        traceback=["Traceback (most recent call last):", '  File "<cell>", line 1', "ZeroDivisionError: ∅ 🙃"],
    )
    failed = transition(running, JobState.FAILED, error=error)
    assert await store.save(failed, expect_state=JobState.RUNNING)

    got = await store.get_job(job.id)
    assert got is not None
    assert got.error == error
    assert got == failed

    timed_out = await start(store, await store.add_job(new()))
    plain = transition(timed_out, JobState.TIMED_OUT, error=JobError(reason="timeout"))
    assert await store.save(plain, expect_state=JobState.RUNNING)
    assert (await store.get_job(plain.id)) == plain


async def test_naive_datetime_is_refused(store: SqlJobStore) -> None:
    job = await store.add_job(new())
    naive = dataclasses.replace(job, state=JobState.RUNNING, started_at=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="naive datetime"):
        await store.save(naive, expect_state=JobState.QUEUED)
    assert await store.get_job(job.id) == job


async def test_concurrent_cas_saves_have_one_winner(store: SqlJobStore) -> None:
    for _ in range(10):
        job = await store.add_job(new())
        running = transition(job, JobState.RUNNING)
        cancelled = transition(job, JobState.CANCELLED)
        results = await asyncio.gather(
            store.save(running, expect_state=JobState.QUEUED),
            store.save(cancelled, expect_state=JobState.QUEUED),
        )
        assert sorted(results) == [False, True]
        winner = running if results[0] else cancelled
        assert await store.get_job(job.id) == winner


async def test_claim_takes_the_oldest_queued_job_with_a_lease(store: SqlJobStore) -> None:
    first, second = await store.add_job(new()), await store.add_job(new())
    before = datetime.now(UTC)
    claimed = await store.claim("w1", lease_s=30)
    assert claimed is not None and claimed.id == first.id
    assert claimed.state is JobState.RUNNING and claimed.worker == "w1" and claimed.started_at is not None
    assert claimed.lease_expires_at is not None
    assert before + timedelta(seconds=29) < claimed.lease_expires_at < before + timedelta(seconds=32)
    assert await store.get_job(first.id) == claimed
    by_id = await store.claim("w2", lease_s=None, job_id=second.id)
    assert by_id is not None and by_id.worker == "w2" and by_id.lease_expires_at is None
    assert await store.claim("w1", lease_s=30) is None  # nothing queued is left
    assert await store.claim("w1", lease_s=30, job_id=second.id) is None  # no longer queued


async def test_concurrent_claims_from_two_stores_have_one_winner_per_job(db_url: str) -> None:
    stores = [SqlJobStore(db_url), SqlJobStore(db_url)]
    for each in stores:
        await each.start()
    try:
        added = [await stores[0].add_job(new(notebook=f"{i}.ipynb")) for i in range(12)]
        claims = await asyncio.gather(
            *(stores[i % 2].claim(f"w{i}", lease_s=30) for i in range(20)), return_exceptions=True
        )
        won = [c for c in claims if isinstance(c, Job)]
        assert not [c for c in claims if isinstance(c, BaseException)]
        assert sorted(c.id for c in won) == [j.id for j in added]  # each job once, none twice
        assert await stores[1].count_jobs(states=[JobState.QUEUED]) == 0
    finally:
        for each in stores:
            await each.close()


async def test_renew_extends_only_the_holders_leases_and_tells_of_cancels(store: SqlJobStore) -> None:
    a = await store.add_job(new())
    b = await store.add_job(new())
    held_a = await store.claim("w1", lease_s=1, job_id=a.id)
    await store.claim("w2", lease_s=1, job_id=b.id)
    assert held_a is not None and held_a.lease_expires_at is not None
    await store.set_cancel_requested(a.id)
    renewed = await store.renew_leases("w1", [a.id, b.id], lease_s=60)
    assert renewed == {a.id: True}  # b is w2's: not renewed, not reported
    after = await store.get_job(a.id)
    assert after is not None and after.lease_expires_at is not None
    assert after.lease_expires_at > held_a.lease_expires_at + timedelta(seconds=50)
    assert await store.renew_leases("w1", [], lease_s=60) == {}


@pytest.mark.postgres
async def test_leases_are_on_the_databases_clock_not_the_nodes(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found from outside: a worker whose clock was 10 s behind wrote leases that a web node's reaper found
    expired within 2 s, and every job of the healthy worker was taken from it."""
    store = SqlJobStore(postgres_url)
    await store.start()
    try:
        job = await store.add_job(new())
        real = sql_module.utcnow
        monkeypatch.setattr(sql_module, "utcnow", lambda: real() - timedelta(seconds=10))  # the worker's clock
        assert await store.claim("w1", lease_s=5, job_id=job.id) is not None
        assert await store.renew_leases("w1", [job.id], lease_s=5) == {job.id: False}
        monkeypatch.setattr(sql_module, "utcnow", real)  # the web node's
        assert await store.expired_leases() == []
    finally:
        await store.close()


async def test_expired_leases_and_saves_fenced_by_worker(store: SqlJobStore) -> None:
    a = await store.add_job(new())
    b = await store.add_job(new())
    held = await store.claim("w1", lease_s=0.01, job_id=a.id)
    await store.claim("w2", lease_s=60, job_id=b.id)
    await store.claim("w3", lease_s=None)  # nothing left; a lease-less claim never expires either
    await asyncio.sleep(0.05)
    assert [j.id for j in await store.expired_leases()] == [a.id]
    assert held is not None
    requeued = transition(held, JobState.QUEUED)
    assert await store.save(requeued, expect_state=JobState.RUNNING, expect_worker="w1")
    assert (await store.renew_leases("w1", [a.id], lease_s=60)) == {}  # the lost worker learns it
    # The lost worker's late result is refused: the job is no longer running under its name.
    late = transition(held, JobState.SUCCEEDED)
    assert not await store.save(late, expect_state=JobState.RUNNING, expect_worker="w1")
    again = await store.claim("w2", lease_s=60)
    assert again is not None and again.id == a.id and again.attempt == 2
    assert not await store.save(
        transition(again, JobState.SUCCEEDED), expect_state=JobState.RUNNING, expect_worker="w1"
    )
    assert await store.save(transition(again, JobState.SUCCEEDED), expect_state=JobState.RUNNING, expect_worker="w2")


async def test_concurrent_mixed_calls(store: SqlJobStore) -> None:
    added = await asyncio.gather(*(store.add_job(new(notebook=f"{i}.ipynb")) for i in range(20)))
    assert len({j.id for j in added}) == 20
    counts = await asyncio.gather(*(store.count_jobs() for _ in range(10)))
    assert counts == [20] * 10
    await asyncio.gather(*(store.update_progress(j.id, 1, 2) for j in added))
    assert all(j.progress_cell == 1 for j in await store.list_jobs(limit=100))


async def test_start_twice_and_second_store(db_url: str) -> None:
    first = SqlJobStore(db_url)
    await first.start()
    await first.start()
    try:
        job = await first.add_job(new())
        second = open_store(db_url)
        await second.start()
        try:
            assert await second.get_job(job.id) == job
        finally:
            await second.close()
    finally:
        await first.close()

    # A restart on an existing, migrated database keeps the data.
    again = SqlJobStore(db_url)
    await again.start()
    try:
        assert await again.count_jobs() == 1
    finally:
        await again.close()


async def test_stores_starting_together_on_one_database(db_url: str) -> None:
    # On SQLite: several first connections race to switch a new file to WAL and to migrate it.
    stores = [SqlJobStore(db_url) for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        job = await stores[0].add_job(new())
        for s in stores:
            assert await s.get_job(job.id) == job
    finally:
        await asyncio.gather(*(s.close() for s in stores))


def _schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_migrations_match_table_definition(store: SqlJobStore) -> None:
    async with store.engine.connect() as conn:
        assert await conn.run_sync(_schema_diff) == []


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'p.db'}")
    await store.start()
    try:
        async with store.engine.connect() as conn:
            pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}")  # noqa: E731
            assert (await pragma("journal_mode")).scalar() == "wal"
            assert (await pragma("busy_timeout")).scalar() == 5000
            assert (await pragma("foreign_keys")).scalar() == 1
            assert (await pragma("synchronous")).scalar() == 1  # NORMAL
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "driver", "database"),
    [
        ("sqlite:////var/lib/nbrelay/jobs.db", "sqlite+aiosqlite", "/var/lib/nbrelay/jobs.db"),
        ("sqlite+aiosqlite:///rel/jobs.db", "sqlite+aiosqlite", "rel/jobs.db"),
        ("postgresql://u:p@db:5432/nbrelay", "postgresql+psycopg", "nbrelay"),
        ("postgresql+psycopg://u@db/nbrelay?sslmode=require", "postgresql+psycopg", "nbrelay"),
    ],
)
def test_engine_url_accepts(url: str, driver: str, database: str) -> None:
    mapped = engine_url(url)
    assert mapped.drivername == driver
    assert mapped.database == database
    assert mapped.render_as_string(hide_password=False).split("://", 1)[1] == url.split("://", 1)[1]


@pytest.mark.parametrize(
    "url",
    ["mysql://u@db/x", "postgresql+asyncpg://u@db/x", "sqlite://", "sqlite:///:memory:", "not a url", ""],
)
def test_engine_url_refuses(url: str) -> None:
    with pytest.raises(ValueError, match=r"sqlite|postgresql"):
        engine_url(url)
