"""The overlap policy with a slow notebook, really run: a tick while the schedule's run is unfinished is skipped
(`skip`) or runs once that run has ended (`queue`). A real in-process server runs the jobs; the test drives a
scheduler loop of its own over the server's schedules with a clock of its own (yearly ticks, which the server's
own loop, on the real clock, never reaches)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbrelay.schedules.loop import Scheduler
from nbrelay.store.schedules import TickOutcome
from tests.live import LiveServer

pytestmark = pytest.mark.kernel


def new_year(year: int, second: int = 1) -> datetime:
    return datetime(year, 1, 1, 0, 0, second, tzinfo=UTC)


def finished(http: httpx.Client, job_id: int, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job: dict[str, Any] = http.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def test_overlap_policies_with_a_slow_notebook(tmp_path: Path, workspace: Path) -> None:
    server = LiveServer(workspace, tmp_path / "data").start()
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        body = {"notebook": "sleep.ipynb", "cron": "@yearly", "timezone": "UTC", "parameters": {"seconds": 1.5}}
        skip = http.post("/api/schedules", json={**body, "overlap": "skip"}).json()
        queue = http.post("/api/schedules", json={**body, "overlap": "queue"}).json()
        service = server.app.state.schedules
        loop = Scheduler(service.store, service.start_run, node="test-loop")

        def outcomes(now: datetime) -> dict[int, tuple[str, int | None]]:
            return {t.schedule_id: (t.outcome, t.job_id) for t in server.call(loop.run_pending(now))}

        first = outcomes(new_year(2027))
        assert {first[skip["id"]][0], first[queue["id"]][0]} == {TickOutcome.STARTED}
        # A year later (for the clock) both first runs are still queued or running: a notebook takes seconds.
        second = outcomes(new_year(2028))
        assert second[skip["id"]][0] == TickOutcome.SKIPPED
        assert second[queue["id"]] == (TickOutcome.WAITING, None)
        assert outcomes(new_year(2028, 2)) == {}  # the waiting tick waits while the first run goes on
        ended = {sid: finished(http, job_id) for sid, (_, job_id) in first.items() if job_id is not None}
        assert {job["state"] for job in ended.values()} == {"succeeded"}
        # Both first runs are over: the queued tick runs now, with its own tick time (started by this loop, or by
        # the server's own, which the end of the run wakes); nothing for `skip`.
        server.call(loop.run_pending(new_year(2028, 30)))
        deadline = time.monotonic() + 30
        # A waiting tick is taken (outcome started) a moment before its job exists: wait for the job too.
        while (ticks := server.call(service.store.ticks(queue["id"])))[0].outcome == TickOutcome.WAITING or (
            ticks[0].outcome == TickOutcome.STARTED and ticks[0].job_id is None
        ):
            assert time.monotonic() < deadline, ticks
            time.sleep(0.05)
        assert [(t.tick_at.year, t.outcome) for t in ticks] == [(2028, "started"), (2027, "started")]
        assert ticks[0].tick_at == new_year(2028, 0)
        assert ticks[0].job_id is not None
        late = finished(http, ticks[0].job_id)
        assert late["state"] == "succeeded" and late["schedule_id"] == queue["id"]
        assert late["created_at"] >= ended[queue["id"]]["finished_at"]
        totals = [http.get("/api/jobs", params={"schedule_id": s["id"]}).json()["total"] for s in (skip, queue)]
        assert totals == [1, 2]
        shown = http.get(f"/api/schedules/{skip['id']}").json()
        assert shown["last_tick"]["outcome"] == "skipped" and "unfinished" in shown["last_tick"]["error"]
    finally:
        server.stop()
