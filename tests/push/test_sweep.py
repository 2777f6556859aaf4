"""The push service's sweep (Push._sweep): every open connection's tick (liveness, heartbeat) and metrics report
once per interval, a slice of the connections at a time, so that a server holding many connections is never busy
with all of them at once (docs/benchmarks.md: at 19,500 connections a whole sweep held requests up ~50 ms)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from nbrelay.auth import Authenticator
from nbrelay.config import Settings
from nbrelay.hub import open_hub
from nbrelay.jobs import open_job_service
from nbrelay.metrics import Metrics
from nbrelay.push import Push
from nbrelay.push.service import _SWEEP_SLICE_MOST, _SWEEP_SLICES
from nbrelay.store import open_store

HEARTBEAT_S = 0.4  # the sweep's interval is a quarter of it: 0.1 s, in slices of 12.5 ms
INTERVAL_S = HEARTBEAT_S / 4


class Ticked:
    """A connection that notes when the sweep ticked it and reported its counts."""

    transport = "ws"

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.reports = 0

    def tick(self, now: float) -> None:
        self.ticks.append(now)

    def report(self) -> None:
        self.reports += 1


async def running_push(tmp_path: Path) -> Push:
    settings = Settings(workspace=tmp_path / "workspace", data_dir=tmp_path / "data", heartbeat_s=HEARTBEAT_S)
    settings.data_dir.mkdir(parents=True)
    store = open_store(settings.database_url)
    await store.start()
    hub = open_hub("memory://", history_size=5, history_ttl_s=60, subscriber_queue_size=64)
    push = Push(settings, hub, open_job_service(settings, store), Authenticator(settings, store), Metrics())
    await push.start()
    return push


async def until(holds: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until `holds()` (the sweep's slices are timed; a slow machine only makes the wait longer)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not holds():
        assert asyncio.get_running_loop().time() < deadline, "the sweep did not get round in time"
        await asyncio.sleep(INTERVAL_S / 4)


async def stop(push: Push) -> None:
    push.connections.clear()  # not real connections: nothing to say goodbye to
    await push.stop()
    await push.jobs.store.close()


@pytest.mark.parametrize("count", [40, 5000])
async def test_every_connection_is_ticked_each_interval_a_slice_at_a_time(tmp_path: Path, count: int) -> None:
    push = await running_push(tmp_path)
    connections = [Ticked() for _ in range(count)]
    try:
        push.connections.update(connections)  # type: ignore[arg-type]
        await until(lambda: min(len(c.ticks) for c in connections) >= 2)  # every one of them, round after round
    finally:
        await stop(push)
    assert all(c.reports == len(c.ticks) for c in connections)
    # a sweep step (one `now`) took one slice: at most an eighth of them, and never more than the most a slice
    # holds (at 5,000: ten slices of 500)
    per_step = Counter(now for c in connections for now in c.ticks)
    assert max(per_step.values()) <= min(-(-count // _SWEEP_SLICES), _SWEEP_SLICE_MOST)
    # and within a round the slices are spread over the interval, not run back to back
    first_round = sorted({c.ticks[0] for c in connections})
    assert first_round[-1] - first_round[0] >= INTERVAL_S / 2


async def test_a_connection_closed_during_a_round_is_not_ticked_again(tmp_path: Path) -> None:
    push = await running_push(tmp_path)
    gone, stays = Ticked(), [Ticked() for _ in range(15)]
    try:
        push.connections.update([gone, *stays])  # type: ignore[list-item]
        await until(lambda: bool(gone.ticks))
        push.connections.discard(gone)  # type: ignore[arg-type]
        ticked_before, stays_before = len(gone.ticks), min(len(c.ticks) for c in stays)
        await until(lambda: min(len(c.ticks) for c in stays) >= stays_before + 2)  # two more rounds went by
    finally:
        await stop(push)
    assert len(gone.ticks) == ticked_before
