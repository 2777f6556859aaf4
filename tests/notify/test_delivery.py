"""The delivery loop against real receivers (HTTP servers in threads): retries with backoff, a hanging endpoint
that holds only its own delivery, restarts between attempts, two loops on one PostgreSQL database."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbrelay.config import Settings
from nbrelay.models import JobState, utcnow
from nbrelay.notify.delivery import DeliveryLoop, next_attempt_at, retry_delay_s
from nbrelay.store.notifications import Delivery, NotificationStore
from nbrelay.store.sql import SqlJobStore
from tests.live import LiveServer
from tests.notify.ends import end
from tests.notify.receiver import Receiver, verify

FAST = {"notify_backoff_s": 0.05, "notify_poll_s": 0.05, "webhook_allow_private": True, "notify_timeout_s": 5.0}


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(workspace=tmp_path / "ws", data_dir=tmp_path / "data", **{**FAST, **overrides})


class Node:
    """One node's store and delivery loop."""

    def __init__(self, url: str, settings: Settings, name: str):
        self.store = SqlJobStore(url)
        self.notes = NotificationStore(self.store.engine)
        self.loop = DeliveryLoop(settings, self.notes, self.store, name)

    async def start(self, *, loop: bool = True) -> Node:
        await self.store.start()
        if loop:
            await self.loop.start()
        return self

    async def stop(self) -> None:
        await self.loop.stop()
        await self.store.close()


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    started = await Node(f"sqlite:///{tmp_path / 'jobs.db'}", settings_for(tmp_path), "n1").start()
    yield started
    await started.stop()


async def settle(notes: NotificationStore, owner: str = "alice", timeout_s: float = 10) -> list[Any]:
    """The owner's deliveries once none is pending."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await notes.list_deliveries(owner=owner)
        if all(d.state != "pending" for d, _log in found) or time.monotonic() > deadline:
            return list(found)
        await asyncio.sleep(0.02)


async def test_a_receiver_that_answers_500_twice_gets_it_on_the_third_attempt(node: Node, receiver: Receiver) -> None:
    hook = await node.notes.add_webhook(
        "alice", receiver.url(), ["job.failed"], schedule_id=None, secret="whsec_" + "A" * 44
    )
    receiver.answers["/hook"] = [500, 500]
    job = await end(node.store, JobState.FAILED)
    node.loop.wake()
    got = await asyncio.to_thread(receiver.wait_for, "/hook", 3)
    ((delivery, log),) = await settle(node.notes)
    assert delivery.state == "delivered" and delivery.attempt == 3
    assert [a.status_code for a in log] == [500, 500, 200]
    assert log[0].response_head == "receiver says no" and log[0].error == "answered 500"
    assert log[2].response_head == '{"ok":true}' and all(a.latency_ms > 0 for a in log)
    assert {r.headers["webhook-id"] for r in got} == {delivery.message_id}  # one id across retries
    for request in got:
        payload = verify(hook.secret, request)
        assert payload["type"] == "job.failed" and payload["data"]["job_id"] == job.id
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert gaps[0] >= 0.05 * 0.75 and gaps[1] >= 0.1 * 0.75  # backoff, doubling


async def test_a_hanging_endpoint_holds_only_its_own_delivery(tmp_path: Path, receiver: Receiver) -> None:
    node = await Node(f"sqlite:///{tmp_path / 'jobs.db'}", settings_for(tmp_path, notify_timeout_s=30.0), "n1").start()
    try:
        receiver.hang_s["/slow"] = 30
        for path in ("/slow", "/fast"):
            await node.notes.add_webhook(
                "alice", receiver.url(path), ["job.succeeded"], schedule_id=None, secret="whsec_" + "B" * 44
            )
        started = time.monotonic()
        await end(node.store, JobState.SUCCEEDED)
        node.loop.wake()
        await asyncio.to_thread(receiver.wait_for, "/slow", 1, 5)
        await asyncio.to_thread(receiver.wait_for, "/fast", 1, 5)
        await end(node.store, JobState.SUCCEEDED)  # a second job while /slow still hangs
        node.loop.wake()
        await asyncio.to_thread(receiver.wait_for, "/fast", 2, 5)
        # Both /fast deliveries came while /slow hangs for 30 s: nothing waited for it (a bound against that only).
        assert time.monotonic() - started < 20
        # The receiver has the second /fast request a moment before its sender records the answer.
        wanted = ["delivered", "delivered", "pending", "pending"]
        for _ in range(100):
            states = sorted(d.state for d, _log in await node.notes.list_deliveries(owner="alice"))
            if states == wanted:
                break
            await asyncio.sleep(0.05)
        assert states == wanted
    finally:
        await node.stop()  # the hanging send is given back to the outbox, not lost
    reopened = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await reopened.start()
    try:
        pending = [d for d, _ in await NotificationStore(reopened.engine).list_deliveries(owner="alice")]
        assert sorted(d.state for d in pending) == ["delivered", "delivered", "pending", "pending"]
        assert all(d.claimed_by is None for d in pending if d.state == "pending")
    finally:
        await reopened.close()


async def test_a_restart_between_attempts_loses_no_delivery(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    first = await Node(url, settings_for(tmp_path, notify_backoff_s=0.5), "n1").start()
    hook = await first.notes.add_webhook(
        "alice", receiver.url(), ["job.succeeded"], schedule_id=None, secret="whsec_" + "C" * 44
    )
    receiver.answers["/hook"] = [503]
    await end(first.store, JobState.SUCCEEDED)
    first.loop.wake()
    await asyncio.to_thread(receiver.wait_for, "/hook", 1)
    await asyncio.sleep(0.1)  # the failed attempt is recorded
    await first.stop()
    second = await Node(url, settings_for(tmp_path), "n2").start()
    try:
        got = await asyncio.to_thread(receiver.wait_for, "/hook", 2)
        ((delivery, log),) = await settle(second.notes)
        assert delivery.state == "delivered"
        assert [(a.node, a.status_code) for a in log] == [("n1", 503), ("n2", 200)]
        assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]
        verify(hook.secret, got[1])
    finally:
        await second.stop()


async def test_redirects_are_not_followed_and_private_targets_refused_at_send_time(
    tmp_path: Path, receiver: Receiver
) -> None:
    node = await Node(f"sqlite:///{tmp_path / 'jobs.db'}", settings_for(tmp_path, notify_max_attempts=1), "n1").start()
    try:
        receiver.redirect["/moved"] = receiver.url("/elsewhere")
        await node.notes.add_webhook(
            "alice", receiver.url("/moved"), ["job.succeeded"], schedule_id=None, secret="whsec_" + "D" * 44
        )
        await end(node.store, JobState.SUCCEEDED)
        node.loop.wake()
        ((delivery, log),) = await settle(node.notes)
        assert delivery.state == "failed"
        assert log[0].status_code == 302 and "redirects are not followed" in (log[0].error or "")
        assert receiver.at("/elsewhere") == []
        # The same endpoint, on a node that does not allow private targets: refused before any request.
        node.loop.settings = settings_for(tmp_path, webhook_allow_private=False, notify_max_attempts=1)
        await node.notes.redeliver(delivery.id)
        node.loop.wake()
        ((delivery, log),) = await settle(node.notes)
        assert delivery.state == "failed" and "refused" in (log[-1].error or "")
        assert "loopback" in (log[-1].error or "")
        assert len(receiver.at("/moved")) == 1
    finally:
        await node.stop()


@pytest.mark.postgres
async def test_two_loops_on_one_postgresql_database_send_each_delivery_once(
    tmp_path: Path, postgres_url: str, receiver: Receiver
) -> None:
    # The outbox is filled first, then both loops start at once and compete for every delivery.
    nodes = [await Node(postgres_url, settings_for(tmp_path), f"n{i}").start(loop=False) for i in range(2)]
    try:
        for path in ("/a", "/b", "/c"):
            await nodes[0].notes.add_webhook(
                "alice", receiver.url(path), ["job.succeeded"], schedule_id=None, secret="whsec_" + "E" * 44
            )
        for _ in range(20):
            await end(nodes[0].store, JobState.SUCCEEDED)
        await asyncio.gather(*(each.loop.start() for each in nodes))
        for path in ("/a", "/b", "/c"):
            await asyncio.to_thread(receiver.wait_for, path, 20)
        found = await settle(nodes[1].notes)
        await asyncio.sleep(0.3)  # any duplicate would arrive meanwhile
        ids = Counter(r.headers["webhook-id"] for r in receiver.received)
        assert len(ids) == 60 and set(ids.values()) == {1}
        assert all(d.state == "delivered" and d.attempt == 1 for d, _log in found)
        senders = Counter(log[0].node for _d, log in found)
        assert set(senders) == {"n0", "n1"}  # both took part
    finally:
        for each in nodes:
            await each.stop()


def test_backoff_doubles_with_jitter_and_stops_at_the_limits(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, notify_backoff_s=10.0, notify_max_attempts=4, notify_horizon_s=100.0)
    for attempts, base in ((1, 10.0), (2, 20.0), (3, 40.0)):
        delays = [retry_delay_s(settings, attempts) for _ in range(200)]
        assert base * 0.75 <= min(delays) < max(delays) <= base * 1.25
    now = utcnow()
    fresh = Delivery(
        1, "webhook", 1, "1", "alice", 1, "job.failed", "msg_x", {}, 0, now, "pending", None, None, now, None
    )
    assert next_attempt_at(settings, fresh, now) is not None
    assert next_attempt_at(settings, dataclasses.replace(fresh, attempt=3), now) is None  # the 4th was the last
    old = dataclasses.replace(fresh, attempt=2, created_at=now - timedelta(seconds=90))
    assert next_attempt_at(settings, old, now) is None  # 40 s more would pass the 100 s horizon


async def test_a_single_node_takes_back_claims_a_killed_process_left(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    dead = await Node(url, settings_for(tmp_path), "killed").start(loop=False)
    await dead.notes.add_webhook(
        "alice", receiver.url(), ["job.succeeded"], schedule_id=None, secret="whsec_" + "F" * 44
    )
    await end(dead.store, JobState.SUCCEEDED)
    assert len(await dead.notes.claim_due("killed", limit=5, lease_s=3600)) == 1  # then the process died
    await dead.stop()
    node = await Node(url, settings_for(tmp_path), "n2").start()
    try:
        await asyncio.to_thread(receiver.wait_for, "/hook", 1, 5)
        ((delivery, _log),) = await settle(node.notes)
        assert delivery.state == "delivered"
    finally:
        await node.stop()


async def test_a_webhook_to_the_service_itself_is_refused_at_send_time(tmp_path: Path, receiver: Receiver) -> None:
    # The receiver stands in for the service: the node's settings say it listens on the receiver's port. The
    # endpoint was stored before the check existed (or the name moved since), so the send must refuse it.
    settings = settings_for(tmp_path, host="127.0.0.1", port=receiver.port, notify_max_attempts=1)
    node = await Node(f"sqlite:///{tmp_path / 'jobs.db'}", settings, "n1").start()
    try:
        await node.notes.add_webhook(
            "alice", receiver.url("/api/schedules/1/run"), ["job.failed"], schedule_id=None, secret="whsec_" + "G" * 44
        )
        await end(node.store, JobState.FAILED)
        node.loop.wake()
        ((delivery, log),) = await settle(node.notes)
        assert delivery.state == "failed" and "is this service itself" in (log[0].error or "")
        assert receiver.received == []
    finally:
        await node.stop()


def test_adding_a_webhook_to_the_service_itself_is_refused(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "ws", tmp_path / "data", webhook_allow_private=True).start()
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        answer = http.post("/api/webhooks", json={"url": f"{server.url}/api/schedules/1/run", "events": ["job.failed"]})
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "webhook_calls_itself"
        assert error["message"].startswith(f"127.0.0.1:{server.port} is this service itself")
        assert http.get("/api/webhooks").json()["webhooks"] == []
    finally:
        server.stop()


async def test_a_wake_just_before_stop_does_not_keep_the_loop_running(tmp_path: Path) -> None:
    """Found from a CI hang: asyncio.wait_for of Python 3.11 returned the wake and swallowed the cancel that came
    with it, so the loop went on and stop() waited for ever (a node's shutdown hung)."""
    node = await Node(f"sqlite:///{tmp_path / 'jobs.db'}", settings_for(tmp_path, notify_poll_s=10), "n1").start()
    try:
        await asyncio.sleep(0.3)  # past the first pass: waiting for a wake or the next poll
        node.loop.wake()  # as a delivery that ends sets it, in the same step as the stop
        await asyncio.wait_for(node.loop.stop(), 5)
    finally:
        await node.store.close()
