"""The outbox in the store: written with a job's terminal state, claimed by one node at a time. Each test runs on
SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import event

from nbrelay.models import JobState, transition, utcnow
from nbrelay.store.base import NewJob
from nbrelay.store.notifications import NotificationStore, deliveries
from nbrelay.store.sql import SqlJobStore
from tests.notify.ends import add_schedule, end


async def rows(store: SqlJobStore) -> list[Any]:
    async with store.engine.connect() as conn:
        return list(await conn.execute(deliveries.select().order_by(deliveries.c.id)))


async def test_a_terminal_save_writes_the_matching_deliveries(store: SqlJobStore) -> None:
    notes = NotificationStore(store.engine)
    every = await notes.add_webhook(
        "alice", "http://a.example/", ["job.succeeded", "job.failed"], schedule_id=None, secret="whsec_x"
    )
    failures = await notes.add_webhook("alice", "http://b.example/", ["job.failed"], schedule_id=None, secret="whsec_y")
    await notes.add_webhook(
        "bob", "http://c.example/", ["job.succeeded", "job.failed"], schedule_id=None, secret="whsec_z"
    )
    await notes.set_email_recipients("alice", ["me@example.com"], ["succeeded"])

    ok = await end(store, JobState.SUCCEEDED)
    got = await rows(store)
    assert [(r.kind, r.target, r.event, r.job_id) for r in got] == [
        ("webhook", str(every.id), "job.succeeded", ok.id),
        ("email", "me@example.com", "job.succeeded", ok.id),
    ]
    data = got[0].payload["data"]
    assert got[0].payload["type"] == "job.succeeded"
    assert data["job_id"] == ok.id and data["notebook"] == "nb/a.ipynb" and data["state"] == "succeeded"
    assert data["report_url"] == f"/api/jobs/{ok.id}/report"
    assert data["submitted_at"] and data["started_at"] and data["finished_at"] and data["duration_s"] is not None
    assert all(r.state == "pending" and r.attempt == 0 and r.message_id.startswith("msg_") for r in got)

    bad = await end(store, JobState.FAILED)
    got = [r for r in await rows(store) if r.job_id == bad.id]
    assert [(r.kind, r.webhook_id) for r in got] == [("webhook", every.id), ("webhook", failures.id)]
    assert got[0].payload["data"]["failing_cell"] == 3  # 1-based
    assert got[0].payload["data"]["error"] == "ValueError: bad"
    assert got[0].message_id != got[1].message_id


async def test_schedule_webhooks_and_recipients(store: SqlJobStore) -> None:
    notes = NotificationStore(store.engine)
    schedule = await add_schedule(store, "alice", ["team@example.com", "ME@example.com"], ["failed"])
    only = await notes.add_webhook("alice", "http://a.example/", ["job.failed"], schedule_id=schedule, secret="whsec_x")
    await notes.set_email_recipients("alice", ["me@example.com"], ["failed"])
    await end(store, JobState.FAILED)  # not the schedule's: its webhook is silent, the user's address is not
    assert [(r.kind, r.target) for r in await rows(store)] == [("email", "me@example.com")]
    job = await end(store, JobState.FAILED, schedule_id=schedule)
    got = [(r.kind, r.target) for r in await rows(store) if r.job_id == job.id]
    # One message per address, whoever asked for it.
    assert got == [("webhook", str(only.id)), ("email", "me@example.com"), ("email", "team@example.com")]
    assert (await rows(store))[-1].payload["data"]["schedule_id"] == schedule


async def test_only_the_save_that_wins_writes_deliveries(store: SqlJobStore) -> None:
    notes = NotificationStore(store.engine)
    await notes.add_webhook(
        "alice", "http://a.example/", ["job.cancelled", "job.succeeded"], schedule_id=None, secret="whsec_x"
    )
    job = await store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
    running = transition(job, JobState.RUNNING, worker="w1")
    assert await store.save(running, expect_state=JobState.QUEUED)
    assert await rows(store) == []  # not an end
    done = transition(running, JobState.SUCCEEDED)
    assert not await store.save(done, expect_state=JobState.RUNNING, expect_worker="w2")  # fenced off
    assert await rows(store) == []
    assert await store.save(done, expect_state=JobState.RUNNING, expect_worker="w1")
    assert not await store.save(done, expect_state=JobState.RUNNING, expect_worker="w1")  # ended already
    assert len(await rows(store)) == 1
    queued = await store.add_job(NewJob(owner="alice", notebook="b.ipynb", kernel_name="python3"))
    assert await store.save(transition(queued, JobState.CANCELLED), expect_state=JobState.QUEUED)
    assert [r.event for r in await rows(store)] == ["job.succeeded", "job.cancelled"]


async def test_claims_attempts_and_redelivery(store: SqlJobStore) -> None:
    notes = NotificationStore(store.engine)
    await notes.add_webhook("alice", "http://a.example/", ["job.succeeded"], schedule_id=None, secret="whsec_x")
    await end(store, JobState.SUCCEEDED)
    (claimed,) = await notes.claim_due("n1", limit=10, lease_s=60)
    assert await notes.claim_due("n2", limit=10, lease_s=60) == []  # n1's lease holds it
    soon = utcnow() - timedelta(seconds=1)
    kw: dict[str, Any] = {"status_code": 500, "latency_ms": 12.5, "response_head": "no", "error": "answered 500"}
    assert not await notes.record_attempt(claimed, "n2", delivered=False, next_attempt_at=soon, **kw)  # not n2's
    assert await notes.record_attempt(claimed, "n1", delivered=False, next_attempt_at=soon, **kw)
    (again,) = await notes.claim_due("n2", limit=10, lease_s=60)
    assert again.attempt == 1
    assert await notes.record_attempt(
        again, "n2", status_code=204, latency_ms=3, response_head="", error=None, delivered=True, next_attempt_at=None
    )
    assert await notes.claim_due("n1", limit=10, lease_s=60) == []
    ((delivery, log),) = await notes.list_deliveries(owner="alice")
    assert delivery.state == "delivered" and delivery.attempt == 2 and delivery.finished_at is not None
    assert [(a.attempt, a.status_code, a.node) for a in log] == [(1, 500, "n2"), (1, 500, "n1"), (2, 204, "n2")]
    assert await notes.list_deliveries(owner="bob") == []
    redone = await notes.redeliver(delivery.id)
    assert redone is not None and redone.state == "pending" and redone.attempt == 0
    assert redone.message_id == delivery.message_id
    assert [d.id for d in await notes.claim_due("n1", limit=10, lease_s=60)] == [delivery.id]


async def test_an_expired_lease_lets_another_node_take_over(store: SqlJobStore) -> None:
    notes = NotificationStore(store.engine)
    await notes.add_webhook("alice", "http://a.example/", ["job.succeeded"], schedule_id=None, secret="whsec_x")
    await end(store, JobState.SUCCEEDED)
    assert len(await notes.claim_due("dead-node", limit=10, lease_s=0.01)) == 1
    await asyncio.sleep(0.05)
    assert len(await notes.claim_due("n2", limit=10, lease_s=60)) == 1


async def test_deleting_a_webhook_drops_its_deliveries(store: SqlJobStore) -> None:
    notes = NotificationStore(store.engine)
    hook = await notes.add_webhook("alice", "http://a.example/", ["job.succeeded"], schedule_id=None, secret="whsec_x")
    await end(store, JobState.SUCCEEDED)
    assert not await notes.delete_webhook(hook.id, "bob")
    assert await notes.delete_webhook(hook.id, "alice")
    assert await rows(store) == []


async def test_two_stores_claim_each_delivery_once(db_url: str) -> None:
    stores = [SqlJobStore(db_url), SqlJobStore(db_url)]
    for each in stores:
        await each.start()
    try:
        notes = [NotificationStore(s.engine) for s in stores]
        for i in range(5):
            await notes[0].add_webhook(
                "alice", f"http://{i}.example/", ["job.succeeded"], schedule_id=None, secret="whsec_x"
            )
        for _ in range(8):
            await end(stores[0], JobState.SUCCEEDED)
        batches = await asyncio.gather(*(notes[i % 2].claim_due(f"n{i}", limit=3, lease_s=60) for i in range(30)))
        ids = [d.id for batch in batches for d in batch]
        assert len(ids) == 40 and len(set(ids)) == 40
    finally:
        for each in stores:
            await each.close()


async def test_the_store_counts_what_a_jobs_end_put_in_the_outbox(store: SqlJobStore) -> None:
    """What the delivery loop's wake at a job's end looks at: an end that owes nothing does not wake it."""
    notes = NotificationStore(store.engine)
    await end(store, JobState.SUCCEEDED)  # no webhook, no address: nothing owed
    assert store.outbox_writes == 0
    await notes.add_webhook("alice", "http://a.example/", ["job.succeeded"], schedule_id=None, secret="whsec_x")
    await notes.set_email_recipients("alice", ["me@example.com"], ["succeeded"])
    await end(store, JobState.SUCCEEDED)
    assert store.outbox_writes == 2 == len(await rows(store))


async def test_a_claim_with_nothing_due_writes_nothing(store: SqlJobStore) -> None:
    """Most polls find nothing due: they read, and leave the outbox (and SQLite's write lock) alone."""
    notes = NotificationStore(store.engine)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.lstrip().split()[0].upper())

    event.listen(store.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await notes.claim_due("n1", limit=10, lease_s=30) == []
        assert statements and "UPDATE" not in statements
        await notes.add_webhook("alice", "http://a.example/", ["job.succeeded"], schedule_id=None, secret="whsec_x")
        await end(store, JobState.SUCCEEDED)
        statements.clear()
        assert len(await notes.claim_due("n1", limit=10, lease_s=30)) == 1
        assert "UPDATE" in statements
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", seen)
