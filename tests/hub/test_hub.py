"""The HubBackend contract: the same test bodies run on every backend (memory, sql on SQLite and PostgreSQL,
redis on the machine's Redis under a key prefix of each test's own): offsets, epochs, bounded history, resume,
watch/unwatch fan-out and bounded subscriber queues. Then what only Redis promises, by real faults: a lost
pub/sub message, a dropped connection, its data lost mid-stream, the server down and back empty."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import redis

from nbrelay.errors import HubUnavailable
from nbrelay.hub import Hub, Subscription, open_hub
from nbrelay.hub.backends.redis import _PUBLISH, LuaScript, RedisBackend
from nbrelay.jobs import User
from nbrelay.models import Event, utcnow
from nbrelay.push.transports.session import Session
from tests.conftest import drop_redis_keys, fresh_postgres_url, fresh_redis_url
from tests.hub.conftest import RedisServer

MakeHub = Callable[..., Awaitable[Hub]]


BACKENDS = [
    "memory",
    "sql",
    pytest.param("sql-postgres", marks=pytest.mark.postgres),
    pytest.param("redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
async def make_hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeHub]:
    """make_hub(fresh=True): a hub on a new, empty backend (a new process for memory://, a new database for
    sql://, a new key prefix for redis://); fresh=False: another hub on the same backend as the last one
    (another node, or a restart)."""
    kind = request.param
    backends: list[tuple[str, str]] = []  # (broker URL, database URL)
    hubs: list[Hub] = []
    resources = ExitStack()

    async def make(history_size: int = 100, queue: int = 1000, ttl_s: float = 3600, fresh: bool = True) -> Hub:
        if fresh or not backends:
            if kind == "redis":
                backends.append((resources.enter_context(fresh_redis_url()), ""))
            elif kind == "sql-postgres":
                backends.append(("sql://", resources.enter_context(fresh_postgres_url())))
            else:
                backends.append((f"{kind}://", f"sqlite:///{tmp_path / f'hub{len(backends)}.db'}"))
        broker, database = backends[-1]
        hub = open_hub(
            broker,
            database_url=database,
            history_size=history_size,
            history_ttl_s=ttl_s,
            subscriber_queue_size=queue,
        )
        await hub.start()
        hubs.append(hub)
        return hub

    make.kind = kind.split("-")[0]  # type: ignore[attr-defined]
    make.urls = backends  # type: ignore[attr-defined]
    yield make
    for hub in hubs:
        await hub.close()
    resources.close()


async def publish(hub: Hub, stream: str, kind: str = "notice", **data: Any) -> Event:
    (event,) = await hub.publish(Event(kind, data), [stream])
    return event


async def received(
    subscription: Subscription, until: Callable[[list[Event]], bool], timeout_s: float = 5
) -> list[Event]:
    """What the subscription is handed until `until(all so far)` holds (delivery may be asynchronous)."""
    seen: list[Event] = []
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not until(seen):
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"not delivered in {timeout_s} s; got {[(e.stream, e.offset) for e in seen]}")
        try:
            seen += await asyncio.wait_for(subscription.next_batch(), remaining)
        except TimeoutError:
            continue
    return seen


def has(n: int) -> Callable[[list[Event]], bool]:
    return lambda events: len(events) >= n


async def ping_answers(hub: Hub, timeout_s: float) -> None:
    """hub.ping() returns within `timeout_s` (a node listens on Redis a moment after its start or return)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            return await hub.ping()
        except HubUnavailable:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_ping_answers_while_the_backend_does(make_hub: MakeHub) -> None:
    hub = await make_hub()
    await ping_answers(hub, timeout_s=5)
    await publish(hub, "user:a")
    await hub.ping()


async def test_offsets_rise_per_stream_with_one_epoch(make_hub: MakeHub) -> None:
    hub = await make_hub()
    a1 = await publish(hub, "user:a", n=1)
    a2 = await publish(hub, "user:a", n=2)
    b1 = await publish(hub, "job:1", n=3)
    assert (a1.offset, a2.offset, b1.offset) == (1, 2, 1)
    assert a1.epoch == a2.epoch and a1.id == f"{a1.epoch}:1"
    assert await hub.position("user:a") == f"{a1.epoch}:2"


async def test_one_event_on_several_streams_keeps_its_type_time_and_data(make_hub: MakeHub) -> None:
    hub = await make_hub()
    await publish(hub, "job:7")
    event = Event("job.progress", {"job": 7, "cell": 3, "text": "naïve ✓"})
    owner, job = await hub.publish(event, ["user:a", "job:7"])
    assert (owner.stream, owner.offset, job.stream, job.offset) == ("user:a", 1, "job:7", 2)
    for positioned in (owner, job):
        assert (positioned.type, positioned.data, positioned.ts) == (event.type, event.data, event.ts)
    (kept,) = (await hub.resume("job:7", f"{job.epoch}:1")).events
    assert kept.to_dict() == job.to_dict()


async def test_resume_gives_exactly_the_missed_events(make_hub: MakeHub) -> None:
    hub = await make_hub(history_size=100)
    events = [await publish(hub, "user:a", n=i) for i in range(50)]
    resume = await hub.resume("user:a", events[19].id or "")
    assert resume.recovered
    assert [e.data["n"] for e in resume.events] == list(range(20, 50))
    assert [e.offset for e in resume.events] == list(range(21, 51))


async def test_resume_at_the_end_is_recovered_and_empty(make_hub: MakeHub) -> None:
    hub = await make_hub()
    last = await publish(hub, "user:a")
    resume = await hub.resume("user:a", last.id or "")
    assert resume.recovered and resume.events == []


async def test_resume_older_than_history_is_not_recovered(make_hub: MakeHub) -> None:
    hub = await make_hub(history_size=10)
    events = [await publish(hub, "user:a", n=i) for i in range(30)]
    resume = await hub.resume("user:a", events[5].id or "")
    assert not resume.recovered and resume.events == [] and resume.last_offset == 30
    # The oldest kept event is offset 21: resuming from 20 still works.
    assert (await hub.resume("user:a", events[19].id or "")).recovered


async def test_lost_history_means_a_new_epoch_and_no_recovery(make_hub: MakeHub) -> None:
    hub = await make_hub()
    old = await publish(hub, "user:a")
    restarted = await make_hub(fresh=True)  # a new process (memory) or a new database (sql)
    await publish(restarted, "user:a")
    resume = await restarted.resume("user:a", old.id or "")
    assert not resume.recovered and resume.epoch != old.epoch


@pytest.mark.parametrize(
    "since", ["", "nonsense", "k3f9:", ":4", "k3f9:-1", "k3f9:99", "k3f9:\u00b2", f"k3f9:{2**63}", f"k3f9:{10**40}"]
)
async def test_unusable_positions_are_not_recovered(make_hub: MakeHub, since: str) -> None:
    hub = await make_hub()
    await publish(hub, "user:a")
    assert not (await hub.resume("user:a", since)).recovered


async def test_history_expires_after_ttl(make_hub: MakeHub) -> None:
    hub = await make_hub(ttl_s=0.2)
    first = await publish(hub, "user:a", n=1)
    await publish(hub, "user:a", n=2)  # what a resume from `first` needs: it will have expired
    await asyncio.sleep(0.3)
    await publish(hub, "user:a", n=3)
    assert not (await hub.resume("user:a", first.id or "")).recovered


async def test_subscribers_get_only_their_streams(make_hub: MakeHub) -> None:
    hub = await make_hub()
    mine, other = hub.subscription(), hub.subscription()
    await hub.follow(mine, "user:a")
    await hub.follow(other, "user:b")
    await publish(hub, "user:a", n=1)
    await publish(hub, "user:b", n=2)
    assert [e.data["n"] for e in await received(mine, has(1))] == [1]
    assert [e.data["n"] for e in await received(other, has(1))] == [2]  # and not 1, which was published first
    hub.unsubscribe(mine)
    await publish(hub, "user:a", n=3)
    await publish(hub, "user:b", n=4)
    assert [e.data["n"] for e in await received(other, has(1))] == [4]
    assert not mine.queue and hub.subscriber_count() == 1


async def test_what_is_published_after_follow_returns_is_delivered_in_order(make_hub: MakeHub) -> None:
    hub = await make_hub()
    subscription = hub.subscription()
    await hub.follow(subscription, "job:3")
    published = [await publish(hub, "job:3", n=i) for i in range(20)]
    events = await received(subscription, has(20))
    assert [e.id for e in events] == [e.id for e in published]


async def test_progress_is_coalesced_when_the_queue_fills_but_terminal_events_never_are(make_hub: MakeHub) -> None:
    hub = await make_hub(queue=10)
    sub = hub.subscription()
    await hub.follow(sub, "job:1")
    for cell in range(1, 41):
        await publish(hub, "job:1", "job.progress", job=1, cell=cell)
    await publish(hub, "job:1", "job.succeeded", job=1)
    await _delivered(hub, sub, "job:1")
    assert not sub.overflowed
    kinds = [(e.type, e.data.get("cell")) for e in sub.queue]
    assert kinds[-1] == ("job.succeeded", None)
    assert ("job.progress", 40) in kinds  # the latest progress survives
    offsets = [e.offset for e in sub.queue]
    assert offsets == sorted(offsets)  # coalescing never reorders
    assert sub.coalesced > 0 and len(sub.queue) <= 10


async def test_a_full_queue_of_other_events_overflows_and_frees_memory(make_hub: MakeHub) -> None:
    hub = await make_hub(queue=10)
    sub = hub.subscription()
    called: list[bool] = []
    sub.on_overflow = lambda: called.append(True)
    await hub.follow(sub, "user:a")
    for i in range(25):
        await publish(hub, "user:a", "job.output", job=1, text="x" * 100, n=i)
    await _delivered(hub, sub, "user:a")
    assert sub.overflowed and called == [True] and len(sub.queue) == 0
    assert await asyncio.wait_for(sub.next_batch(), 1) == []


async def test_concurrent_publishers_to_one_stream_get_contiguous_offsets(make_hub: MakeHub) -> None:
    """Publishes made at once (batched into one transaction by sql://) take offsets 1..n with no gap or repeat;
    each publisher is told the offset its event was delivered and kept with. In call order where publishing is
    one queue (memory, sql); redis:// runs concurrent publishes on several connections, in any order."""
    hub = await make_hub(history_size=500)
    sub = hub.subscription()
    await hub.follow(sub, "user:a")
    placed = await asyncio.gather(*(publish(hub, "user:a", n=i) for i in range(200)))
    assert sorted(e.offset or 0 for e in placed) == list(range(1, 201))
    by_offset = [(e.offset, e.data["n"]) for e in sorted(placed, key=lambda e: e.offset or 0)]
    assert [(e.offset, e.data["n"]) for e in await received(sub, has(200))] == by_offset
    assert [(e.offset, e.data["n"]) for e in (await hub.resume("user:a", f"{placed[0].epoch}:0")).events] == by_offset
    if make_hub.kind != "redis":  # type: ignore[attr-defined]
        assert [e.offset for e in placed] == list(range(1, 201))


async def test_two_hubs_publishing_at_once_to_one_stream_never_share_an_offset(make_hub: MakeHub) -> None:
    """sql:// and redis:// hubs on one backend (two processes) take a stream's offsets from the backend, batch or
    not: together they fill 1..n. memory:// is one process's history, with nothing to share."""
    if make_hub.kind == "memory":  # type: ignore[attr-defined]
        return
    hub_a = await make_hub(history_size=500)
    hub_b = await make_hub(history_size=500, fresh=False)
    placed = await asyncio.gather(*(publish(hub, "user:a", n=i) for i in range(60) for hub in (hub_a, hub_b)))
    assert sorted(e.offset or 0 for e in placed) == list(range(1, 121))
    resume = await hub_a.resume("user:a", f"{placed[0].epoch}:0")
    assert sorted(e.data["n"] for e in resume.events) == sorted(e.data["n"] for e in placed)


async def test_publishes_across_streams_are_delivered_in_order(make_hub: MakeHub) -> None:
    """Publishes of one moment to several streams (one sql:// transaction): on each stream, offsets from 1 in the
    order of its events, the same type, data and time on every stream of an event, and, where publishing is one
    queue (memory, sql), every event handed on in call order."""
    hub = await make_hub()
    sub = hub.subscription()
    for stream in ("user:a", "job:1", "job:2"):
        await hub.follow(sub, stream)
    targets = [["user:a", "job:1"], ["job:2"], ["user:a"], ["job:1", "job:2", "user:a"]] * 10
    events = [Event("job.progress", {"job": 1, "n": i}) for i in range(len(targets))]
    placed = await asyncio.gather(*(hub.publish(e, streams) for e, streams in zip(events, targets, strict=True)))
    for event, streams, copies in zip(events, targets, placed, strict=True):
        assert [c.stream for c in copies] == streams
        assert {(c.type, c.ts, c.data["n"]) for c in copies} == {(event.type, event.ts, event.data["n"])}
    delivered = await received(sub, has(sum(map(len, targets))))
    for stream in ("user:a", "job:1", "job:2"):
        mine = [e for e in delivered if e.stream == stream]
        assert [e.offset for e in mine] == list(range(1, len(mine) + 1))
        if make_hub.kind != "redis":  # type: ignore[attr-defined]
            assert [e.data["n"] for e in mine] == [i for i, streams in enumerate(targets) if stream in streams]
    if make_hub.kind != "redis":  # type: ignore[attr-defined]
        assert [(e.stream, e.data["n"]) for e in delivered] == [(s, i) for i, ss in enumerate(targets) for s in ss]


async def _delivered(hub: Hub, sub: Subscription, stream: str) -> None:
    """Wait until everything published on `stream` so far has been handed to the hub's subscribers, without
    taking from `sub`: a marker published afterwards on another stream arrives after them."""
    marker = hub.subscription()
    await hub.follow(marker, "user:marker")
    await publish(hub, "user:marker")
    await received(marker, has(1))
    hub.unsubscribe(marker)


async def test_many_first_readers_of_a_new_stream_agree_on_its_epoch(make_hub: MakeHub) -> None:
    hub = await make_hub()
    # sql: a second hub on the same database races the first; memory: one process, one hub
    other = await make_hub(fresh=False) if make_hub.kind != "memory" else hub  # type: ignore[attr-defined]
    positions = await asyncio.gather(*(h.resume("user:new", "x:0") for h in [hub, other] * 10))
    assert len({p.epoch for p in positions}) == 1


async def test_a_hub_sharing_the_backend_resumes_what_another_published(make_hub: MakeHub) -> None:
    """History is the backend's: a second hub on it (another node, or the same server restarted) resumes
    exactly. memory:// is one process's memory: another hub (process) has none of it, and says so."""
    hub = await make_hub()
    seen = await publish(hub, "user:a", n=1)
    await publish(hub, "user:a", n=2)
    other = await make_hub(fresh=False)
    resume = await other.resume("user:a", seen.id or "")
    if make_hub.kind == "memory":  # type: ignore[attr-defined]
        assert not resume.recovered and resume.epoch != seen.epoch
        return
    assert resume.recovered and [e.data["n"] for e in resume.events] == [2]
    assert (await publish(other, "user:a")).offset == 3


async def test_a_position_is_where_the_stream_stands_after_another_hub_published(make_hub: MakeHub) -> None:
    """A welcome's position is the `since` of the client's resume: a node that read a stream's position once,
    then did not follow it while another node published more than its history holds, must not answer the old
    position again (that resume would be recovered: false though nothing was lost)."""
    hub = await make_hub(history_size=5)
    if make_hub.kind == "memory":  # type: ignore[attr-defined]
        return  # one process's memory: there is no other hub to publish to it
    other = await make_hub(history_size=5, fresh=False)
    await publish(hub, "user:a")
    assert await hub.position("user:a") == await other.position("user:a")
    for n in range(8):
        last = await publish(other, "user:a", n=n)
    assert await hub.position("user:a") == last.id
    resume = await hub.resume("user:a", await hub.position("user:a"))
    assert resume.recovered and resume.events == []


async def test_fan_out_between_two_hubs_on_one_backend(make_hub: MakeHub) -> None:
    """redis:// fans out between nodes: what one hub publishes reaches the subscribers of every hub that
    follows the stream. memory:// and sql:// fan out within their process only: a hub hands its subscribers
    what it published itself, and another process's publishes reach them by resume, not live."""
    hub_a = await make_hub()
    hub_b = await make_hub(fresh=False)
    on_a, on_b = hub_a.subscription(), hub_b.subscription()
    await hub_a.follow(on_a, "user:a")
    await hub_b.follow(on_b, "user:a")
    await publish(hub_a, "user:a", n=1)
    await publish(hub_b, "user:a", n=2)
    if make_hub.kind == "redis":  # type: ignore[attr-defined]
        assert [e.data["n"] for e in await received(on_b, has(2))] == [1, 2]
        assert [e.data["n"] for e in await received(on_a, has(2))] == [1, 2]
    else:
        assert [e.data["n"] for e in await received(on_b, has(1))] == [2]
        assert [e.data["n"] for e in await received(on_a, has(1))] == [1]


async def test_a_stream_nobody_follows_reaches_no_hub(make_hub: MakeHub) -> None:
    """Fan-out goes only where a subscriber is: a hub whose followers left gets nothing more of the stream."""
    hub_a = await make_hub()
    hub_b = await make_hub(fresh=False)
    delivered: list[Event] = []
    deliver = hub_b._deliver
    hub_b.backend._deliver = lambda event: (delivered.append(event), deliver(event))  # type: ignore[attr-defined]
    left, stays = hub_b.subscription(), hub_b.subscription()
    await hub_b.follow(left, "job:5")
    await hub_b.follow(stays, "user:b")
    hub_b.unsubscribe(left)
    await asyncio.sleep(0.1)  # the unwatch reaches the backend
    await publish(hub_a, "job:5")
    await publish(hub_a, "user:b")
    await publish(hub_b, "job:5")
    await publish(hub_b, "user:b")
    if make_hub.kind == "redis":  # type: ignore[attr-defined]
        await received(stays, has(2))
        assert [e.stream for e in delivered] == ["user:b", "user:b"]  # no job:5 from Redis
    else:  # a process is handed what it publishes itself, and nothing of another's
        await received(stays, has(1))
        assert [e.stream for e in delivered] == ["job:5", "user:b"]
    assert not left.queue


async def test_watch_only_while_someone_follows(make_hub: MakeHub) -> None:
    """The hub asks its backend for a stream's events from the first local subscriber to the last."""
    hub = await make_hub()
    calls: list[tuple[str, str]] = []
    watch, unwatch = hub.backend.watch, hub.backend.unwatch

    async def watching(stream: str) -> None:
        calls.append(("watch", stream))
        await watch(stream)

    async def unwatching(stream: str) -> None:
        calls.append(("unwatch", stream))
        await unwatch(stream)

    hub.backend.watch, hub.backend.unwatch = watching, unwatching  # type: ignore[method-assign]
    first, second = hub.subscription(), hub.subscription()
    await hub.follow(first, "job:9")
    await hub.follow(second, "job:9")
    hub.unsubscribe(first)
    await asyncio.sleep(0)
    assert calls == [("watch", "job:9")]
    hub.unsubscribe(second)
    await asyncio.sleep(0.05)
    assert calls == [("watch", "job:9"), ("unwatch", "job:9")]


async def test_following_again_right_after_leaving_still_receives(make_hub: MakeHub) -> None:
    """Subscribers coming and going in quick turns (page reloads): the watch and unwatch of a stream reach the
    backend in order, so whoever follows last is handed the stream's events."""
    hub = await make_hub()
    for _ in range(5):
        gone = hub.subscription()
        hub.subscribe(gone, "job:2")
        hub.unsubscribe(gone)
    staying = hub.subscription()
    await hub.follow(staying, "job:2")
    published = await publish(hub, "job:2")
    assert [e.id for e in await received(staying, has(1))] == [published.id]


async def test_sql_history_made_by_the_old_store_migration_is_kept(tmp_path: Path) -> None:
    """Before the hub owned its tables, the job store's migration 0003 created them: their rows stay usable."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the tables as migration 0003 made them, with a stream in them
        db.executescript(
            """
            CREATE TABLE hub_streams (name VARCHAR(160) NOT NULL, epoch VARCHAR(32) NOT NULL,
                last_offset BIGINT NOT NULL, PRIMARY KEY (name));
            CREATE TABLE hub_events (stream VARCHAR(160) NOT NULL, "offset" BIGINT NOT NULL,
                type VARCHAR(64) NOT NULL, data JSON NOT NULL, ts DATETIME NOT NULL, PRIMARY KEY (stream, "offset"));
            CREATE INDEX ix_hub_events_ts ON hub_events (ts);
            INSERT INTO hub_streams VALUES ('user:a', 'old1', 2);
            """
        )
        now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")
        for offset in (1, 2):
            db.execute(
                "INSERT INTO hub_events VALUES ('user:a', ?, 'notice', ?, ?)", (offset, f'{{"n": {offset}}}', now)
            )
    hub = open_hub(
        "sql://", database_url=f"sqlite:///{path}", history_size=100, history_ttl_s=3600, subscriber_queue_size=10
    )
    await hub.start()
    try:
        resume = await hub.resume("user:a", "old1:1")
        assert resume.recovered and [(e.offset, e.data) for e in resume.events] == [(2, {"n": 2})]
        assert (await publish(hub, "user:a")).id == "old1:3"
    finally:
        await hub.close()


@pytest.mark.parametrize("url", ["", "mqtt://broker", "redis", "sqlite:///x.db", "nats://x"])
def test_an_unknown_broker_url_is_refused_with_the_accepted_schemes(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported broker URL") as refused:
        open_hub(url, database_url="sqlite:///x.db", history_size=1, history_ttl_s=1, subscriber_queue_size=8)
    for scheme in ("sql://", "memory://"):
        assert scheme in str(refused.value)


# What only redis:// promises, by real faults ---------------------------------------------------------------
@pytest.fixture
async def redis_pair() -> AsyncIterator[tuple[Hub, Hub, str]]:
    """Two hubs (two nodes) on the machine's Redis under a prefix of this test's own, and its URL."""
    with fresh_redis_url() as url:
        hubs = [open_hub(url, history_size=100, history_ttl_s=3600, subscriber_queue_size=1000) for _ in range(2)]
        for hub in hubs:
            await hub.start()
        try:
            yield hubs[0], hubs[1], url
        finally:
            for hub in hubs:
                await hub.close()


def backend(hub: Hub) -> RedisBackend:
    assert isinstance(hub.backend, RedisBackend)
    return hub.backend


@pytest.mark.redis
async def test_a_lost_pubsub_message_is_read_from_history(redis_pair: tuple[Hub, Hub, str]) -> None:
    """Node B sees offset 3 after 1: it reads 2 from history before handing 3 on."""
    node_a, node_b, _ = redis_pair
    on_b = node_b.subscription()
    await node_b.follow(on_b, "user:a")
    await publish(node_a, "user:a", n=1)
    normal = backend(node_a).publish_script
    silent = _PUBLISH.replace("redis.call('PUBLISH'", "-- redis.call('PUBLISH'")
    assert silent != _PUBLISH
    backend(node_a).publish_script = LuaScript(silent)  # appended, never announced
    await publish(node_a, "user:a", n=2)
    backend(node_a).publish_script = normal
    await publish(node_a, "user:a", n=3)
    events = await received(on_b, has(3))
    assert [(e.offset, e.data["n"]) for e in events] == [(1, 1), (2, 2), (3, 3)]


@pytest.mark.redis
async def test_a_nodes_own_events_are_not_decoded_again(redis_pair: tuple[Hub, Hub, str]) -> None:
    """Node A's pub/sub message of its own publish is handed on as the event A published (its data object, its
    JSON text made once); node B decodes the message. Both see the same JSON, offset and epoch."""
    node_a, node_b, _ = redis_pair
    on_a, on_b = node_a.subscription(), node_b.subscription()
    await node_a.follow(on_a, "user:a")
    await node_b.follow(on_b, "user:a")
    event = Event("notice", {"pair": (1, 2), "text": "é"})
    (placed,) = await node_a.publish(event, ["user:a"])
    (on_node_a,) = await received(on_a, has(1))
    (on_node_b,) = await received(on_b, has(1))
    assert on_node_a.data is event.data and on_node_a.data_json() is event.data_json()
    assert on_node_b.data == {"pair": [1, 2], "text": "é"}  # decoded from the message
    assert on_node_a.json() == on_node_b.json() == placed.json()
    assert backend(node_a)._own == {}  # nothing left once the publish is answered


@pytest.mark.redis
async def test_a_dropped_pubsub_connection_is_made_good_from_history(
    redis_pair: tuple[Hub, Hub, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis cuts node B's connection (CLIENT KILL); what A publishes before B is back comes to B's
    subscribers from history, in order, on every stream B watches."""
    node_a, node_b, url = redis_pair
    on_b = node_b.subscription()
    await node_b.follow(on_b, "user:a")
    await node_b.follow(on_b, "job:4")
    await publish(node_a, "user:a", n=1)
    await received(on_b, has(1))
    prefix = url.partition("?prefix=")[2]
    with redis.Redis.from_url(url.partition("?")[0], decode_responses=True) as admin:
        names = [c["name"] for c in admin.client_list() if c["name"].startswith(f"{prefix}:hub:")]
        assert sorted(names) == sorted(backend(node).client_name for node in (node_a, node_b))  # one per node
        (b_id,) = [c["id"] for c in admin.client_list() if c["name"] == backend(node_b).client_name]
        admin.client_kill_filter(_id=b_id)
    # Published while B's connection is down (it comes back after 0.1 s): no pub/sub message reaches B.
    await publish(node_a, "user:a", n=2)
    await publish(node_a, "job:4", n=3)
    await publish(node_a, "user:a", n=4)
    events = await received(on_b, has(3))
    assert [(e.stream, e.data["n"]) for e in events] in (
        [("user:a", 2), ("user:a", 4), ("job:4", 3)],  # re-read stream by stream
        [("job:4", 3), ("user:a", 2), ("user:a", 4)],
        [("user:a", 2), ("job:4", 3), ("user:a", 4)],  # live, on a quick reconnect
    )
    assert "lost the connection to Redis" in caplog.text
    await publish(node_a, "user:a", n=5)
    assert [e.data["n"] for e in await received(on_b, has(1))] == [5]


async def alice_live_on(node: Hub, publisher: Hub) -> tuple[Subscription, Session, Event]:
    """A client of `node` following user:alice, after one event that `publisher` published: the node's
    subscription, the client's session and that event."""
    subscription = node.subscription()
    await node.follow(subscription, "user:alice")
    session = Session(User("alice"), heartbeat_s=25, idle_timeout_s=60)
    session.receive('{"op":"subscribe","stream":"user:alice"}')
    first = await publish(publisher, "user:alice", n=1)
    assert [m["op"] for e in await received(subscription, has(1)) for m in session.deliver(e)] == ["event"]
    return subscription, session, first


@pytest.mark.redis
async def test_redis_losing_the_data_mid_stream_starts_a_new_epoch(redis_pair: tuple[Hub, Hub, str]) -> None:
    """The keys vanish as they do when Redis restarts empty (or evicts them): the next event has a new epoch,
    a live client is told recovered: false before it, a resume from before is not recovered, nothing crashes."""
    node_a, node_b, url = redis_pair
    on_b, session, first = await alice_live_on(node_b, publisher=node_a)
    assert drop_redis_keys(url) > 0
    after = await publish(node_a, "user:alice", n=2)
    assert after.epoch != first.epoch and after.offset == 1
    (event,) = await received(on_b, has(1))
    notice, message = session.deliver(event)
    assert notice == {"op": "recovered", "stream": "user:alice", "recovered": False, "position": f"{after.epoch}:0"}
    assert message["id"] == after.id
    resume = await node_b.resume("user:alice", first.id or "")
    assert not resume.recovered and resume.epoch == after.epoch
    assert (await publish(node_b, "user:alice", n=3)).id == f"{after.epoch}:2"


async def test_publishes_to_a_redis_that_does_not_answer_share_one_connect() -> None:
    """A Redis that takes the connection and never answers (a hung server, a proxy to nowhere): ten publishes at
    once fail together with a clear error after one attempt's timeout, not one attempt each in turn."""
    accepted: list[asyncio.StreamWriter] = []
    arrived = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        arrived.set()
        await reader.read()  # never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0?prefix=nbrelay-test-silent")
    try:
        outcomes = await asyncio.gather(
            *(backend.publish(Event("notice", {"n": i}), ["user:a"]) for i in range(10)), return_exceptions=True
        )
        assert all(isinstance(o, HubUnavailable) for o in outcomes), outcomes
        assert f"the hub's Redis at redis://127.0.0.1:{port}/0 did not take a notice event" in str(outcomes[0])
        assert "did not answer in 2 s" in str(outcomes[0])
        assert len(accepted) == 1
        # A connect whose only caller gave up still ends, and the next publish tries anew (not its old outcome).
        arrived.clear()
        given_up = asyncio.ensure_future(backend.publish(Event("notice", {}), ["user:a"]))
        await asyncio.wait_for(arrived.wait(), 5)
        given_up.cancel()
        await asyncio.sleep(2.2)  # that connect times out meanwhile
        with pytest.raises(HubUnavailable, match="did not answer in 2 s"):
            await backend.publish(Event("notice", {}), ["user:a"])
        assert len(accepted) == 3
    finally:
        await backend.close()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


@pytest.mark.redis
async def test_ping_says_redis_is_away_and_answers_once_this_node_listens_again(redis_server: RedisServer) -> None:
    hub = open_hub(redis_server.url, history_size=100, history_ttl_s=3600, subscriber_queue_size=100)
    await hub.start()
    try:
        await ping_answers(hub, timeout_s=5)
        redis_server.kill()
        with pytest.raises(HubUnavailable, match=f"the hub's Redis at redis://127.0.0.1:{redis_server.port}/0 did no"):
            await hub.ping()
        redis_server.start()
        await ping_answers(hub, timeout_s=20)  # the listener's back-off is at most a few seconds
    finally:
        await hub.close()


@pytest.mark.redis
async def test_redis_down_then_back_empty(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """While Redis is down, publishing and following fail with a clear error and the nodes keep trying; when it
    comes back empty, a node's subscribers get the new epoch's events (first told recovered: false)."""
    node_a, node_b = (
        open_hub(redis_server.url, history_size=100, history_ttl_s=3600, subscriber_queue_size=100) for _ in range(2)
    )
    await node_a.start()
    await node_b.start()
    try:
        on_b, session, first = await alice_live_on(node_b, publisher=node_a)
        redis_server.kill()
        with pytest.raises(HubUnavailable, match=f"the hub's Redis at redis://127.0.0.1:{redis_server.port}/0"):
            await publish(node_a, "user:alice", n=2)
        node_b.watch_timeout_s = 0.5
        with pytest.raises(HubUnavailable, match="could not start following job:1"):
            await node_b.follow(node_b.subscription(), "job:1")
        await asyncio.sleep(1)  # the pub/sub connections retry meanwhile
        assert "lost the connection to Redis" in caplog.text

        redis_server.start()  # empty: nothing was saved
        deadline = asyncio.get_running_loop().time() + 15
        while True:
            try:
                after = await publish(node_a, "user:alice", n=3)
                break
            except HubUnavailable:
                assert asyncio.get_running_loop().time() < deadline, "Redis did not come back"
                await asyncio.sleep(0.2)
        assert after.epoch != first.epoch
        (event,) = await received(on_b, has(1), timeout_s=15)  # live, or re-read once B is back
        assert event.id == after.id
        assert session.deliver(event)[0]["recovered"] is False
        assert not (await node_b.resume("user:alice", first.id or "")).recovered
        assert "the connection to Redis at" in caplog.text and " is back" in caplog.text
    finally:
        await node_a.close()
        await node_b.close()
