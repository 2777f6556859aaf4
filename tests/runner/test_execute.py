"""The runner on real kernels: outcomes, events, timeouts (interrupt then kill), cancel, a kernel that dies."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbrelay.models import JobState
from nbrelay.runner.execute import Outcome, RunSpec, run_job
from nbrelay.runner.html import ReportWriter
from nbrelay.runner.kernels import KernelPool

pytestmark = pytest.mark.kernel


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")


@pytest.fixture
async def pool(workspace: Path) -> AsyncIterator[KernelPool]:
    pool = KernelPool(size=1, cwd=workspace, startup_timeout_s=60)
    yield pool
    await pool.close()


class Run:
    def __init__(self, workspace: Path, pool: KernelPool, tmp_path: Path):
        self.workspace = workspace
        self.pool = pool
        self.reports = ReportWriter()
        self.tmp_path = tmp_path
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.stop = asyncio.Event()
        self.seen: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)

    def spec(self, notebook: str, **kw: Any) -> RunSpec:
        return RunSpec(
            job_id=1,
            notebook_path=self.workspace / notebook,
            kernel_name="python3",
            parameters=kw.pop("parameters", {}),
            report_path=self.tmp_path / "out" / "report.html",
            output_path=self.tmp_path / "out" / "executed.ipynb",
            interrupt_grace_s=kw.pop("interrupt_grace_s", 2.0),
            **kw,
        )

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((time.monotonic(), kind, data))
        self.seen[kind].set()

    async def __call__(self, notebook: str, **kw: Any) -> Outcome:
        return await run_job(self.spec(notebook, **kw), self.pool, self.reports, self.emit, self.stop)

    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.events]

    def report(self) -> str:
        return (self.tmp_path / "out" / "report.html").read_text()

    def first(self, kind: str) -> dict[str, Any]:
        return next(data for _, k, data in self.events if k == kind)


@pytest.fixture
def run(workspace: Path, pool: KernelPool, tmp_path: Path) -> Run:
    return Run(workspace, pool, tmp_path)


async def test_success_with_parameters_writes_report_and_events(run: Run) -> None:
    outcome = await run("params.ipynb", parameters={"n": 5, "label": "zebra-42", "items": [1, 2]})
    assert outcome.state is JobState.SUCCEEDED and outcome.error is None and outcome.report_written
    assert run.kinds()[0] == "job.started"
    total = run.first("job.started")["total"]
    progress = [data for _, kind, data in run.events if kind == "job.progress"]
    assert [p["cell"] for p in progress] == list(range(1, total + 1))
    assert all(p["total"] == total and p["cell_duration_s"] >= 0 for p in progress)
    output = "".join(data["text"] for _, kind, data in run.events if kind == "job.output")
    assert "n=5 x=0.5 label=zebra-42 flag=False items=[1, 2]" in output
    assert "zebra-42" in run.report()
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


async def test_failing_cell_records_error_and_writes_partial_report(run: Run) -> None:
    outcome = await run("fail.ipynb")
    assert outcome.state is JobState.FAILED
    error = outcome.error
    assert error is not None
    assert (error.cell_index, error.ename) == (1, "ValueError")
    assert "boom in cell 2" in (error.evalue or "")
    assert any("boom in cell 2" in line for line in error.traceback)
    assert not any("\x1b[" in line for line in error.traceback)  # colour codes stripped
    report = run.report()
    assert "boom in cell 2" in report and "before" in report
    assert "after" not in "".join(d["text"] for _, k, d in run.events if k == "job.output")


async def test_cell_timeout_interrupts_the_cell(run: Run) -> None:
    started = time.monotonic()
    outcome = await run("sleep.ipynb", parameters={"seconds": 60}, cell_timeout_s=1)
    assert outcome.state is JobState.TIMED_OUT
    assert outcome.error is not None and "exceeded the cell timeout of 1 s" in outcome.error.reason
    assert outcome.error.ename == "KeyboardInterrupt"  # the interrupt stopped it: no kill was needed
    assert time.monotonic() - started < 30
    assert "KeyboardInterrupt" in run.report()


async def test_job_timeout_kills_a_kernel_that_ignores_interrupts(run: Run) -> None:
    started = time.monotonic()
    outcome = await run("ignore_interrupt.ipynb", parameters={"seconds": 120}, timeout_s=2, interrupt_grace_s=1)
    elapsed = time.monotonic() - started
    assert outcome.state is JobState.TIMED_OUT
    assert outcome.error is not None and outcome.error.reason == "job exceeded its timeout of 2 s"
    assert 2.5 <= elapsed < 30  # timeout, then the grace period, then the kill
    pid = run.first("job.started")["pid"]
    assert not pid_exists(pid)
    assert outcome.report_written


async def test_job_timeout_interrupts_busy_python(run: Run) -> None:
    outcome = await run("busy.ipynb", parameters={"seconds": 120}, timeout_s=1.5)
    assert outcome.state is JobState.TIMED_OUT
    assert outcome.error is not None and outcome.error.ename == "KeyboardInterrupt"


async def test_cancel_of_a_running_job_leaves_no_kernel(run: Run) -> None:
    async def cancel_when_started() -> None:
        await run.seen["job.output"].wait()
        run.stop.set()

    canceller = asyncio.create_task(cancel_when_started())
    outcome = await run("sleep.ipynb", parameters={"seconds": 120})
    await canceller
    assert outcome.state is JobState.CANCELLED
    assert outcome.error is not None and outcome.error.reason == "cancelled by request"
    assert not pid_exists(run.first("job.started")["pid"])


async def test_kernel_killed_from_outside_fails_the_job_within_5_s(run: Run) -> None:
    killed_at: list[float] = []

    async def kill_when_running() -> None:
        await run.seen["job.output"].wait()
        os.kill(run.first("job.started")["pid"], signal.SIGKILL)
        killed_at.append(time.monotonic())

    killer = asyncio.create_task(kill_when_running())
    outcome = await run("sleep.ipynb", parameters={"seconds": 120})
    await killer
    assert outcome.state is JobState.FAILED
    assert outcome.error is not None and outcome.error.reason == "kernel died (signal 9 SIGKILL)"
    assert time.monotonic() - killed_at[0] < 5


async def test_kernel_that_kills_itself(run: Run) -> None:
    outcome = await run("kill_self.ipynb")
    assert outcome.state is JobState.FAILED
    assert outcome.error is not None and outcome.error.reason.startswith("kernel died (signal 9")
    assert outcome.error.cell_index == 2
    assert outcome.report_written


async def test_stream_output_is_throttled_and_complete(run: Run) -> None:
    outcome = await run("output.ipynb", parameters={"lines": 60, "delay": 0.01}, output_throttle_s=0.25)
    assert outcome.state is JobState.SUCCEEDED
    outputs = [d for _, k, d in run.events if k == "job.output"]
    assert "".join(d["text"] for d in outputs) == "".join(f"line {i}\n" for i in range(60))
    assert 2 <= len(outputs) <= 8  # ~0.6 s of printing, one event per 0.25 s, not one per line
    # Throttled flushes are at least 0.25 s apart; only the flush at the end of the cell may come sooner.
    times = [t for t, k, _ in run.events if k == "job.output"][:-1]
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times))


async def test_missing_notebook_fails_cleanly(run: Run) -> None:
    outcome = await run("gone.ipynb")
    assert outcome.state is JobState.FAILED
    assert outcome.error is not None and outcome.error.reason.startswith("could not read the notebook")
    assert run.events == []
