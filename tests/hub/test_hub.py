"""The hub on each backend (memory, and sql on SQLite and PostgreSQL): offsets, epochs, bounded history,
resume, and bounded subscriber queues. The same test bodies run on every backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from nbrelay.hub import Hub, open_hub
from nbrelay.store.sql import SqlJobStore
from tests.conftest import fresh_postgres_url

MakeHub = Callable[..., Awaitable[Hub]]


@pytest.fixture(params=["memory", "sql", pytest.param("sql-postgres", marks=pytest.mark.postgres)])
async def make_hub(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MakeHub]:
    stores: list[SqlJobStore] = []
    broker = request.param.split("-")[0]
    schemas = ExitStack()

    async def make(history_size: int = 100, queue: int = 1000, ttl_s: float = 3600, fresh: bool = True) -> Hub:
        engine = None
        if broker == "sql":
            if fresh or not stores:
                url = (
                    schemas.enter_context(fresh_postgres_url())
                    if request.param == "sql-postgres"
                    else f"sqlite:///{tmp_path / f'hub{len(stores)}.db'}"
                )
                stores.append(SqlJobStore(url))
                await stores[-1].start()
            engine = stores[-1].engine
        hub = open_hub(
            f"{broker}://",
            history_size=history_size,
            history_ttl_s=ttl_s,
            subscriber_queue_size=queue,
            engine=engine,
        )
        await hub.start()
        return hub

    make.kind = broker  # type: ignore[attr-defined]
    yield make
    for store in stores:
        await store.close()
    schemas.close()


async def test_offsets_rise_per_stream_with_one_epoch(make_hub: MakeHub) -> None:
    hub = await make_hub()
    a1 = await hub.publish("user:a", "notice", {"n": 1})
    a2 = await hub.publish("user:a", "notice", {"n": 2})
    b1 = await hub.publish("job:1", "notice", {"n": 3})
    assert (a1.offset, a2.offset, b1.offset) == (1, 2, 1)
    assert a1.epoch == a2.epoch and a1.id == f"{a1.epoch}:1"
    assert await hub.position("user:a") == f"{a1.epoch}:2"


async def test_resume_gives_exactly_the_missed_events(make_hub: MakeHub) -> None:
    hub = await make_hub(history_size=100)
    events = [await hub.publish("user:a", "notice", {"n": i}) for i in range(50)]
    resume = await hub.resume("user:a", events[19].id or "")
    assert resume.recovered
    assert [e.data["n"] for e in resume.events] == list(range(20, 50))


async def test_resume_at_the_end_is_recovered_and_empty(make_hub: MakeHub) -> None:
    hub = await make_hub()
    last = await hub.publish("user:a", "notice", {})
    resume = await hub.resume("user:a", last.id or "")
    assert resume.recovered and resume.events == []


async def test_resume_older_than_history_is_not_recovered(make_hub: MakeHub) -> None:
    hub = await make_hub(history_size=10)
    events = [await hub.publish("user:a", "notice", {"n": i}) for i in range(30)]
    resume = await hub.resume("user:a", events[5].id or "")
    assert not resume.recovered and resume.events == [] and resume.last_offset == 30
    # The oldest kept event is offset 21: resuming from 20 still works.
    assert (await hub.resume("user:a", events[19].id or "")).recovered


async def test_lost_history_means_a_new_epoch_and_no_recovery(make_hub: MakeHub) -> None:
    hub = await make_hub()
    old = await hub.publish("user:a", "notice", {})
    restarted = await make_hub(fresh=True)  # a new process (memory) or a new database (sql)
    await restarted.publish("user:a", "notice", {})
    resume = await restarted.resume("user:a", old.id or "")
    assert not resume.recovered and resume.epoch != old.epoch


async def test_sql_history_survives_a_restart(tmp_path: Path) -> None:
    """Only the sql backend keeps history across restarts (memory:// by design does not)."""
    store = SqlJobStore(f"sqlite:///{tmp_path / 'hub.db'}")
    await store.start()
    try:

        def sql_hub() -> Hub:
            return open_hub(
                "sql://", history_size=100, history_ttl_s=3600, subscriber_queue_size=100, engine=store.engine
            )

        hub = sql_hub()
        await hub.start()
        seen = await hub.publish("user:a", "notice", {"n": 1})
        await hub.publish("user:a", "notice", {"n": 2})
        restarted = sql_hub()  # same database, new process state
        await restarted.start()
        resume = await restarted.resume("user:a", seen.id or "")
        assert resume.recovered and [e.data["n"] for e in resume.events] == [2]
        assert (await restarted.publish("user:a", "notice", {})).offset == 3
    finally:
        await store.close()


@pytest.mark.parametrize("since", ["", "nonsense", "k3f9:", ":4", "k3f9:-1", "k3f9:99"])
async def test_unusable_positions_are_not_recovered(make_hub: MakeHub, since: str) -> None:
    hub = await make_hub()
    await hub.publish("user:a", "notice", {})
    assert not (await hub.resume("user:a", since)).recovered


async def test_history_expires_after_ttl(make_hub: MakeHub) -> None:
    hub = await make_hub(ttl_s=0.2)
    first = await hub.publish("user:a", "notice", {"n": 1})
    await hub.publish("user:a", "notice", {"n": 2})  # what a resume from `first` needs: it will have expired
    await asyncio.sleep(0.3)
    await hub.publish("user:a", "notice", {"n": 3})
    assert not (await hub.resume("user:a", first.id or "")).recovered


async def test_subscribers_get_only_their_streams(make_hub: MakeHub) -> None:
    hub = await make_hub()
    mine, other = hub.subscription(), hub.subscription()
    hub.subscribe(mine, "user:a")
    hub.subscribe(other, "user:b")
    await hub.publish("user:a", "notice", {"n": 1})
    batch = await asyncio.wait_for(mine.next_batch(), 1)
    assert [e.data["n"] for e in batch] == [1] and not other.queue
    hub.unsubscribe(mine)
    await hub.publish("user:a", "notice", {"n": 2})
    assert not mine.queue and hub.subscriber_count() == 1


async def test_progress_is_coalesced_when_the_queue_fills_but_terminal_events_never_are(make_hub: MakeHub) -> None:
    hub = await make_hub(queue=10)
    sub = hub.subscription()
    hub.subscribe(sub, "job:1")
    for cell in range(1, 41):
        await hub.publish("job:1", "job.progress", {"job": 1, "cell": cell})
    await hub.publish("job:1", "job.succeeded", {"job": 1})
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
    hub.subscribe(sub, "user:a")
    for i in range(25):
        await hub.publish("user:a", "job.output", {"job": 1, "text": "x" * 100, "n": i})
    assert sub.overflowed and called == [True] and len(sub.queue) == 0
    assert await asyncio.wait_for(sub.next_batch(), 1) == []


async def test_many_first_readers_of_a_new_stream_agree_on_its_epoch(make_hub: MakeHub) -> None:
    hub = await make_hub()
    # sql: a second hub on the same database races the first; memory: one process, one hub
    other = await make_hub(fresh=False) if make_hub.kind == "sql" else hub  # type: ignore[attr-defined]
    positions = await asyncio.gather(*(h.resume("user:new", "x:0") for h in [hub, other] * 10))
    assert len({p.epoch for p in positions}) == 1
