"""The worker pool itself: what it does with a cancel that comes before the job is handed to a worker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nbformat
import pytest

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
