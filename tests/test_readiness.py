"""Readiness: probes asked together, each within a time limit, and a change of the answer logged once."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nbrelay.readiness import Readiness


async def test_probes_run_together_each_within_its_limit_and_a_change_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    away = False
    broker_asked = asyncio.Event()

    async def database() -> None:
        await broker_asked.wait()  # asked one after the other, this one would time out
        await asyncio.sleep(0.3)
        if away:
            raise OSError(111, "Connection refused")

    async def broker() -> None:
        broker_asked.set()
        await asyncio.sleep(0.3)

    readiness = Readiness({"database": database, "broker": broker}, timeout_s=1)
    caplog.set_level(logging.INFO, logger="nbrelay.readiness")
    checks = await readiness.check()
    assert [(c.name, c.ok, c.reason) for c in checks] == [("database", True, None), ("broker", True, None)]
    assert not caplog.records  # ready from the start: nothing to say

    away = True
    for _ in range(3):
        (db, _) = await readiness.check()
        assert (db.ok, db.reason) == (False, "[Errno 111] Connection refused")
    assert [r.getMessage() for r in caplog.records] == ["not ready: database: [Errno 111] Connection refused"]

    readiness.timeout_s = 0.1  # both now answer too late
    checks = await readiness.check()
    assert [c.reason for c in checks] == ["no answer within 0.1 s"] * 2
    assert all(c.ms >= 90 for c in checks)
    assert caplog.records[-1].getMessage() == (
        "not ready: database: no answer within 0.1 s; broker: no answer within 0.1 s"
    )

    away, readiness.timeout_s = False, 1
    assert all(c.ok for c in await readiness.check())
    assert caplog.records[-1].getMessage() == "ready again (database, broker answer)"
    assert len(caplog.records) == 3


async def test_a_probe_under_way_is_joined_by_the_next_check_not_started_again() -> None:
    """A broker that never answers a connect holds one probe, however often a load balancer asks."""
    calls = 0
    release = asyncio.Event()

    async def broker() -> None:
        nonlocal calls
        calls += 1
        await release.wait()

    readiness = Readiness({"broker": broker}, timeout_s=0.05)
    for _ in range(5):
        (check,) = await readiness.check()
        assert check.reason == "no answer within 0.05 s"
    assert calls == 1
    release.set()
    await asyncio.sleep(0.01)  # the one under way ends
    (check,) = await readiness.check()
    assert check.ok and calls == 2  # an ended probe is not an answer for later: a new check asks again


async def test_close_gives_up_the_probes_under_way() -> None:
    gave_up = asyncio.Event()

    async def hangs() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            gave_up.set()
            raise

    readiness = Readiness({"broker": hangs}, timeout_s=0.05)
    (check,) = await readiness.check()
    assert not check.ok
    readiness.close()
    await asyncio.wait_for(gave_up.wait(), 5)
