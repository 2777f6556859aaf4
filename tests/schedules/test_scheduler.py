"""The scheduler loop with a controllable clock on a real database: which ticks fire, once each however many loops
run, what the missed-tick and overlap policies do, and that a restart keeps all of it.

The job a tick starts is written straight to the job store here (`Node.start_run`): these tests are about the
ticks, not the notebooks (test_overlap.py runs real ones)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from nbrelay.models import Job, JobState, transition
from nbrelay.schedules.cron import zone
from nbrelay.schedules.loop import Scheduler
from nbrelay.store.base import NewJob
from nbrelay.store.schedules import Schedule, ScheduleStore, TickOutcome
from nbrelay.store.sql import SqlJobStore

BERLIN = zone("Europe/Berlin")


class Node:
    """One web node's share: its own engine on the shared database, and its scheduler loop."""

    def __init__(self, db_url: str, name: str, *, runs: str = "finished"):
        self.store = SqlJobStore(db_url)
        self.schedules = ScheduleStore(self.store.engine)
        # finished: each run is a finished job; unfinished: a queued one (overlap policy); none: no job row, only
        # the call is counted (1,000 ticks, where two writes per job would be most of the test's time).
        self.runs = runs
        self.loop = Scheduler(self.schedules, self.start_run, node=name)
        self.started: list[tuple[int, datetime]] = []

    async def start_run(self, schedule: Schedule, tick_at: datetime) -> Job:
        self.started.append((schedule.id, tick_at))
        if self.runs == "none":
            return Job(id=len(self.started), owner=schedule.owner, notebook=schedule.notebook, kernel_name="python3")
        job = await self.store.add_job(
            NewJob(owner=schedule.owner, notebook=schedule.notebook, kernel_name="python3", schedule_id=schedule.id)
        )
        if self.runs == "finished":
            done = transition(transition(job, JobState.RUNNING), JobState.SUCCEEDED)
            assert await self.store.save(done, expect_state=JobState.QUEUED)
        return job

    async def add(self, cron: str, *, tz: str = "UTC", ticks_from: datetime, **fields: Any) -> Schedule:
        schedule = Schedule(
            id=0, owner="alice", notebook="tiny.ipynb", cron=cron, timezone=tz, ticks_from=ticks_from, **fields
        )
        return await self.schedules.add(schedule)


@pytest.fixture
async def node(db_url: str) -> AsyncIterator[Node]:
    one = Node(db_url, "node-a")
    await one.store.start()
    yield one
    await one.store.close()


@pytest.fixture
async def sqlite_node(tmp_path: Path) -> AsyncIterator[Node]:
    """For the fire times across DST: the store's part in them is the same on both backends (tested below)."""
    one = Node(f"sqlite:///{tmp_path / 'jobs.db'}", "node-a")
    await one.store.start()
    yield one
    await one.store.close()


def clock(start: datetime, end: datetime, step: timedelta) -> Iterator[datetime]:
    """The times a loop wakes at: `start`, then every `step`, until `end`."""
    now = start
    while now <= end:
        yield now
        now += step


async def fired(node: Node, times: Iterator[datetime]) -> list[str]:
    for now in times:
        await node.loop.run_pending(now)
    return [tick_at.astimezone(BERLIN).isoformat() for _, tick_at in node.started]


async def test_weekdays_at_nine_in_berlin_fire_across_both_dst_changes(sqlite_node: Node) -> None:
    # The loop wakes 20 s past every hour (UTC), through each change; 09:00 in Berlin is 08:00Z in winter time
    # and 07:00Z in summer time.
    spring = datetime(2026, 3, 26, 12, 0, 20, tzinfo=UTC)
    await sqlite_node.add("0 9 * * MON-FRI", tz="Europe/Berlin", ticks_from=spring)
    assert await fired(sqlite_node, clock(spring, spring + timedelta(days=6), timedelta(hours=1))) == [
        "2026-03-27T09:00:00+01:00",
        "2026-03-30T09:00:00+02:00",
        "2026-03-31T09:00:00+02:00",
        "2026-04-01T09:00:00+02:00",
    ]
    assert [tick_at.astimezone(UTC).hour for _, tick_at in sqlite_node.started] == [8, 7, 7, 7]


async def test_weekdays_at_nine_in_berlin_fire_across_fall_back(sqlite_node: Node) -> None:
    autumn = datetime(2026, 10, 22, 12, 0, 20, tzinfo=UTC)
    await sqlite_node.add("0 9 * * MON-FRI", tz="Europe/Berlin", ticks_from=autumn)
    assert await fired(sqlite_node, clock(autumn, autumn + timedelta(days=5), timedelta(hours=1))) == [
        "2026-10-23T09:00:00+02:00",
        "2026-10-26T09:00:00+01:00",
        "2026-10-27T09:00:00+01:00",
    ]
    assert [tick_at.astimezone(UTC).hour for _, tick_at in sqlite_node.started] == [7, 8, 8]


async def test_half_past_two_fires_once_on_the_spring_forward_day(sqlite_node: Node) -> None:
    start = datetime(2026, 3, 28, 12, tzinfo=UTC)
    await sqlite_node.add("30 2 * * *", tz="Europe/Berlin", ticks_from=start)
    # Every five minutes across the night, whose 02:00-03:00 does not exist in Berlin.
    night = clock(datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 3, tzinfo=UTC), timedelta(minutes=5))
    assert await fired(sqlite_node, night) == ["2026-03-29T03:00:00+02:00"]


async def test_half_past_two_fires_once_on_the_fall_back_day(sqlite_node: Node) -> None:
    start = datetime(2026, 10, 24, 12, tzinfo=UTC)
    await sqlite_node.add("30 2 * * *", tz="Europe/Berlin", ticks_from=start)
    # 02:30 happens twice in Berlin this night (00:30Z and 01:30Z).
    night = clock(datetime(2026, 10, 24, 23, tzinfo=UTC), datetime(2026, 10, 25, 3, tzinfo=UTC), timedelta(minutes=5))
    assert await fired(sqlite_node, night) == ["2026-10-25T02:30:00+02:00"]


async def two_loops_fire_each_tick_once(db_url: str, schedule_count: int, minutes: int) -> None:
    a, b = Node(db_url, "node-a", runs="none"), Node(db_url, "node-b", runs="none")
    await a.store.start()
    await b.store.start()
    try:
        t0 = datetime(2026, 12, 4, 12, tzinfo=UTC)
        schedules = [await a.add("* * * * *", ticks_from=t0) for _ in range(schedule_count)]
        for minute in range(1, minutes + 1):  # both loops wake at each minute, at the same moment
            now = t0 + timedelta(minutes=minute, seconds=1)
            await asyncio.gather(a.loop.run_pending(now), b.loop.run_pending(now))
        runs = Counter(a.started + b.started)
        expected = {(s.id, t0 + timedelta(minutes=m)) for s in schedules for m in range(1, minutes + 1)}
        assert set(runs) == expected
        assert max(runs.values()) == 1
        for schedule in schedules:
            ticks = await a.schedules.ticks(schedule.id, limit=minutes + 10)
            assert len(ticks) == minutes
            assert {t.outcome for t in ticks} == {TickOutcome.STARTED}
            assert all(t.job_id is not None for t in ticks)
        print(f"\n{len(expected)} ticks: node-a started {len(a.started)}, node-b {len(b.started)}")
    finally:
        await a.store.close()
        await b.store.close()


@pytest.mark.postgres
async def test_two_loops_on_postgresql_fire_each_of_1000_ticks_once(postgres_url: str) -> None:
    # Without waiting for each commit to reach the disk (4,000 of them here): what is tested is who inserts first.
    url = make_url(postgres_url)
    url = url.update_query_dict({"options": f"{url.query['options']} -csynchronous_commit=off"})
    await two_loops_fire_each_tick_once(url.render_as_string(hide_password=False), schedule_count=20, minutes=50)


async def test_two_loops_on_sqlite_fire_each_tick_once(tmp_path: Path) -> None:
    await two_loops_fire_each_tick_once(f"sqlite:///{tmp_path / 'jobs.db'}", schedule_count=5, minutes=20)


@pytest.mark.parametrize("missed", ["run_once", "skip"])
async def test_a_three_hour_outage_and_a_restart_keep_the_missed_tick_policy(db_url: str, missed: str) -> None:
    t0 = datetime(2026, 12, 4, 12, tzinfo=UTC)
    before = Node(db_url, "node-a")
    await before.store.start()
    schedule = await before.add("*/15 * * * *", ticks_from=t0 - timedelta(minutes=1), missed=missed)
    await before.loop.run_pending(t0 + timedelta(seconds=5))
    assert before.started == [(schedule.id, t0)]
    await before.store.close()  # the service goes down at 12:00:05 and comes back at 15:07

    after = Node(db_url, "node-a")
    await after.store.start()
    try:
        back = t0 + timedelta(hours=3, minutes=7)
        ticks = await after.loop.run_pending(back)
        last_due = t0 + timedelta(hours=3)
        if missed == "run_once":  # twelve ticks fell meanwhile: one catch-up run, for the latest
            assert after.started == [(schedule.id, last_due)]
            assert [(t.tick_at, t.outcome) for t in ticks] == [(last_due, TickOutcome.STARTED)]
        else:
            assert after.started == []
            assert [(t.tick_at, t.outcome) for t in ticks] == [(last_due, TickOutcome.SKIPPED)]
            assert "missed" in (ticks[0].error or "")
        assert await after.loop.run_pending(back + timedelta(seconds=30)) == []  # nothing more is owed
        # The next tick runs on time whatever the policy.
        await after.loop.run_pending(t0 + timedelta(hours=3, minutes=15, seconds=2))
        assert after.started[-1] == (schedule.id, t0 + timedelta(hours=3, minutes=15))
        stored = await after.schedules.get(schedule.id)
        assert stored is not None and stored.missed == missed
    finally:
        await after.store.close()


async def test_overlap_skip_and_queue_while_a_run_is_unfinished(db_url: str) -> None:
    node = Node(db_url, "node-a", runs="unfinished")  # the previous run is always unfinished
    await node.store.start()
    try:
        node.loop.max_waiting = 2
        t0 = datetime(2026, 12, 4, 12, tzinfo=UTC)
        skip = await node.add("* * * * *", ticks_from=t0, overlap="skip")
        queue = await node.add("* * * * *", ticks_from=t0, overlap="queue")
        outcomes: dict[int, list[str]] = {skip.id: [], queue.id: []}
        for minute in range(1, 6):
            for tick in await node.loop.run_pending(t0 + timedelta(minutes=minute, seconds=1)):
                outcomes[tick.schedule_id].append(tick.outcome)
        assert outcomes[skip.id] == ["started"] + ["skipped"] * 4
        assert outcomes[queue.id] == ["started", "waiting", "waiting", "skipped", "skipped"]
        latest = await node.schedules.latest_ticks([skip.id, queue.id, 999])
        assert {sid: (t.tick_at, t.outcome) for sid, t in latest.items()} == {
            skip.id: (t0 + timedelta(minutes=5), TickOutcome.SKIPPED),
            queue.id: (t0 + timedelta(minutes=5), TickOutcome.SKIPPED),
        }
        # The queued schedule's run ends: the oldest waiting tick starts, with its own tick time.
        (first,) = await node.store.list_jobs(schedule_id=queue.id)
        done = transition(transition(first, JobState.RUNNING), JobState.SUCCEEDED)
        assert await node.store.save(done, expect_state=JobState.QUEUED)
        (started,) = await node.loop.run_pending(t0 + timedelta(minutes=5, seconds=30))
        assert (started.schedule_id, started.tick_at, started.outcome) == (
            queue.id,
            t0 + timedelta(minutes=2),
            TickOutcome.STARTED,
        )
        assert started.job_id is not None
        assert await node.loop.run_pending(t0 + timedelta(minutes=5, seconds=40)) == []  # the next waits its turn
    finally:
        await node.store.close()


async def test_a_schedule_deleted_during_a_pass_takes_no_other_tick_with_it(node: Node) -> None:
    """Found from outside: a DELETE between the pass's listing and its insert failed the insert on the foreign
    key, and with it every other schedule's due tick (logged as a crash, tried again 10 s later)."""
    t0 = datetime(2026, 12, 4, 12, tzinfo=UTC)
    kept = await node.add("* * * * *", ticks_from=t0)
    gone = await node.add("* * * * *", ticks_from=t0)
    listed = node.schedules.last_ticks

    async def delete_meanwhile(schedule_ids: Any) -> dict[int, datetime]:
        assert await node.schedules.delete(gone.id)
        return await listed(schedule_ids)

    node.schedules.last_ticks = delete_meanwhile  # type: ignore[method-assign]
    (tick,) = await node.loop.run_pending(t0 + timedelta(minutes=1))
    assert (tick.schedule_id, tick.outcome) == (kept.id, TickOutcome.STARTED)
    assert [schedule_id for schedule_id, _ in node.started] == [kept.id]
    assert await node.schedules.ticks(gone.id) == []


async def test_paused_schedules_do_not_tick(node: Node) -> None:
    t0 = datetime(2026, 12, 4, 12, tzinfo=UTC)
    schedule = await node.add("* * * * *", ticks_from=t0)
    assert await node.schedules.save(dataclasses.replace(schedule, enabled=False))
    assert await node.loop.run_pending(t0 + timedelta(minutes=3)) == []
    assert node.started == []


async def test_a_run_that_cannot_start_is_recorded_as_failed(node: Node) -> None:
    from nbrelay.errors import NotFound

    async def refuse(schedule: Schedule, tick_at: datetime) -> Job:
        raise NotFound("no notebook at tiny.ipynb", code="notebook_not_found")

    node.loop.start_run = refuse
    t0 = datetime(2026, 12, 4, 12, tzinfo=UTC)
    schedule = await node.add("* * * * *", ticks_from=t0)
    (tick,) = await node.loop.run_pending(t0 + timedelta(minutes=1))
    assert (tick.outcome, tick.error) == (TickOutcome.FAILED, "no notebook at tiny.ipynb")
    (stored,) = await node.schedules.ticks(schedule.id)
    assert (stored.outcome, stored.error, stored.job_id) == (TickOutcome.FAILED, "no notebook at tiny.ipynb", None)


async def test_the_loop_runs_on_its_own_clock(node: Node) -> None:
    # start() with a clock a minute past a tick: the first pass runs it, without anyone calling run_pending.
    t0 = datetime(2026, 12, 4, 12, tzinfo=UTC)
    await node.add("* * * * *", ticks_from=t0 - timedelta(minutes=1))
    node.loop.clock = lambda: t0 + timedelta(seconds=1)
    node.loop.start()
    try:
        for _ in range(200):
            if node.started:
                break
            await asyncio.sleep(0.01)
        assert [tick_at for _, tick_at in node.started] == [t0]
    finally:
        await node.loop.stop()


async def test_a_wake_just_before_stop_does_not_keep_the_loop_running(sqlite_node: Node) -> None:
    """Found rereading a CI hang: asyncio.wait_for of Python 3.11 returns the wake, swallowing the cancel that came
    with it, so the loop went on and stop() waited for ever (a node's shutdown hung)."""
    sqlite_node.loop.start()
    await asyncio.sleep(0.3)  # past the first pass: waiting for a wake or the next poll (10 s)
    sqlite_node.loop.wake()
    await asyncio.wait_for(sqlite_node.loop.stop(), 5)
