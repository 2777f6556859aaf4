"""The worker pool itself: what it does with a cancel that comes before the job is handed to a worker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nbformat
import pytest

import nbrelay.executor.pool as pool_module
from nbrelay.config import Settings
from nbrelay.executor.pool import WorkerPool
from nbrelay.models import TERMINAL_EVENTS, Event
from nbrelay.runner.spec import RunSpec

pytestmark = pytest.mark.kernel


async def test_a_cancel_between_the_claim_and_the_hand_over_starts_no_cell(tmp_path: Path) -> None:
    """The dispatcher claims a job in the store, builds its spec, then hands it to a worker: a cancel in between
    found no worker running the job and was dropped, so the job ran to its end."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("open('ran.txt', 'w').close()")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, workspace / "writes.ipynb")
    pool = WorkerPool(Settings(workspace=workspace, data_dir=tmp_path / "data", workers=1))
    ended: asyncio.Queue[Event] = asyncio.Queue()

    async def on_event(event: Event) -> None:
        if event.type in TERMINAL_EVENTS:
            ended.put_nowait(event)

    await pool.start(on_event)
    try:
        await pool.cancel(7)  # claimed, not handed over yet
        await pool.run(
            RunSpec(
                job_id=7,
                notebook_path=workspace / "writes.ipynb",
                kernel_name="python3",
                parameters={},
                report_path=tmp_path / "out" / "report.html",
                output_path=tmp_path / "out" / "executed.ipynb",
            )
        )
        event = await asyncio.wait_for(ended.get(), timeout=120)
    finally:
        await pool.stop()
    assert event.data["job"] == 7 and event.data["state"] == "cancelled", event
    assert not (workspace / "ran.txt").exists()


def _ticking(workspace: Path, seconds: float) -> None:
    """A notebook that appends a line to ticks.txt every 0.1 s for `seconds`, and prints each."""
    source = (
        "import time\n"
        f"for i in range({int(seconds * 10)}):\n"
        "    open('ticks.txt', 'a').write(f'{i}\\n')\n"
        "    print(i, flush=True)\n"
        "    time.sleep(0.1)"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, workspace / "ticks.ipynb")


async def test_a_run_on_a_lease_not_renewed_stops_by_itself_sends_nothing_more_and_writes_no_report(
    tmp_path: Path,
) -> None:
    """Found from outside: with a worker's main process stopped (frozen, or cut off from the store), its worker
    process ran the job on beside the next attempt, and on resuming its events and report came out over the other
    attempt's. Past its lease the worker process stops the run itself: no event after, no report."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    _ticking(workspace, seconds=30)
    pool = WorkerPool(Settings(workspace=workspace, data_dir=tmp_path / "data", workers=1))
    events: list[tuple[float, Event]] = []
    ended: asyncio.Queue[Event] = asyncio.Queue()

    async def on_event(event: Event) -> None:
        events.append((time.monotonic(), event))
        if event.type in TERMINAL_EVENTS:
            ended.put_nowait(event)

    await pool.start(on_event)
    out = tmp_path / "out"
    try:
        spec = RunSpec(7, workspace / "ticks.ipynb", "python3", {}, out / "report.html", out / "executed.ipynb")
        lease_until = time.monotonic() + 8  # the worker process and its kernel start, the run goes on: no renewal
        await pool.run(spec, lease_until=lease_until)
        event = await asyncio.wait_for(ended.get(), timeout=60)
    finally:
        await pool.stop()
    assert event.data["state"] == "failed" and event.data["report"] is False, event
    assert "lease was not renewed in time" in event.data["error"]["reason"]
    late = [e.type for at, e in events if at > lease_until + 0.5 and e.type not in TERMINAL_EVENTS]
    assert late == [], late  # nothing of the run came out after its lease (the stop's own check is 0.25 s)
    assert not (out / "report.html").exists()
    assert any(e.type == "job.output" for _, e in events)  # it ran while the lease held
    assert len((workspace / "ticks.txt").read_text().split()) < 100  # and not its 30 s


async def test_a_run_whose_lease_is_renewed_runs_to_its_end(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    _ticking(workspace, seconds=6)
    pool = WorkerPool(Settings(workspace=workspace, data_dir=tmp_path / "data", workers=1))
    ended: asyncio.Queue[Event] = asyncio.Queue()

    async def on_event(event: Event) -> None:
        if event.type in TERMINAL_EVENTS:
            ended.put_nowait(event)

    async def renew() -> None:
        while True:
            await asyncio.sleep(0.5)
            pool.extend_leases({7}, time.monotonic() + 2)

    await pool.start(on_event)
    out = tmp_path / "out"
    renewing = asyncio.create_task(renew())
    try:
        spec = RunSpec(7, workspace / "ticks.ipynb", "python3", {}, out / "report.html", out / "executed.ipynb")
        await pool.run(spec, lease_until=time.monotonic() + 4)
        event = await asyncio.wait_for(ended.get(), timeout=60)
    finally:
        renewing.cancel()
        await pool.stop()
    assert event.data["state"] == "succeeded" and event.data["report"] is True, event
    assert (out / "report.html").exists()


async def test_check_says_when_the_pool_takes_no_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What readiness asks of the local executor: the pool runs, a worker process is alive, it is not stopping."""
    monkeypatch.setattr(pool_module, "_WATCH_INTERVAL_S", 3600)  # dead workers stay dead while the test looks
    pool = WorkerPool(Settings(workspace=tmp_path, data_dir=tmp_path / "data", workers=2))
    await pool.start(lambda event: asyncio.sleep(0))
    try:
        pool.check()
        pool._workers[0].process.kill()
        await asyncio.to_thread(pool._workers[0].process.join, 10)
        pool.check()  # one is enough to take jobs
        pool._workers[1].process.kill()
        await asyncio.to_thread(pool._workers[1].process.join, 10)
        with pytest.raises(RuntimeError, match="none of the 2 worker processes is alive"):
            pool.check()
    finally:
        await pool.stop()
    with pytest.raises(RuntimeError, match="stopping"):
        pool.check()
