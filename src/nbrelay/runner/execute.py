"""Run one notebook job in a worker process: parameters in, nbclient hooks out as events, a report always.

The caller gives a `RunSpec`, a kernel pool, a report writer, an `emit(type, data)` callback and a stop event
(set on cancel). Timeouts and cancel interrupt the kernel first and kill it after a grace period.
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from nbrelay.models import JobError, JobState
from nbrelay.runner.html import ReportWriter
from nbrelay.runner.kernels import Kernel, KernelPool
from nbrelay.runner.params import inject_parameters

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], None]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass(frozen=True)
class RunSpec:
    job_id: int
    notebook_path: Path
    kernel_name: str
    parameters: dict[str, Any]
    report_path: Path
    output_path: Path
    timeout_s: float | None = None
    cell_timeout_s: float | None = None
    interrupt_grace_s: float = 3.0
    output_throttle_s: float = 0.25
    output_max_chars: int = 4000


@dataclass
class Outcome:
    state: JobState
    error: JobError | None = None
    report_written: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)


def _signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit code {code}" if code is not None else "unknown exit"
    try:
        return f"signal {-code} {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def strip_ansi(lines: list[str]) -> list[str]:
    return [_ANSI.sub("", line) for line in lines]


class _JobClient(NotebookClient):
    """nbclient with its hooks turned into progress and throttled output events."""

    def __init__(self, nb: nbformat.NotebookNode, spec: RunSpec, emit: Emit, **kw: Any):
        super().__init__(
            nb,
            timeout=None,  # cell and job timeouts are enforced by the supervisor, which interrupts first
            allow_errors=False,
            record_timing=True,
            on_cell_start=self._cell_start,
            on_cell_executed=self._cell_executed,
            on_cell_error=self._cell_error,
            **kw,
        )
        self.spec = spec
        self.emit = emit
        self.total = sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip())
        self.done = 0
        self.started = time.monotonic()
        self.cell_index: int | None = None
        self.cell_started: float | None = None
        self.error: JobError | None = None
        self._pending: list[str] = []
        self._pending_name = "stdout"
        self._last_flush = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None

    # hooks ---------------------------------------------------------------------------------------------------
    def _cell_start(self, cell: Any, cell_index: int) -> None:
        self.cell_index = cell_index
        self.cell_started = time.monotonic()

    def _cell_executed(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self.flush_output()
        self.done += 1
        now = time.monotonic()
        self.emit(
            "job.progress",
            {
                "cell": self.done,
                "total": self.total,
                "cell_index": cell_index,
                "elapsed_s": round(now - self.started, 3),
                "cell_duration_s": round(now - (self.cell_started or now), 3),
            },
        )
        self.cell_started = None

    def _cell_error(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        content = execute_reply.get("content", {})
        self.error = JobError(
            reason=f"cell {cell_index} raised {content.get('ename', 'an error')}",
            cell_index=cell_index,
            ename=content.get("ename"),
            evalue=content.get("evalue"),
            traceback=strip_ansi(list(content.get("traceback") or [])),
        )

    # stream output, throttled ----------------------------------------------------------------------------------
    def output(self, outs: list[Any], msg: dict[str, Any], display_id: str | None, cell_index: int) -> Any:
        if msg["msg_type"] == "stream":
            content = msg["content"]
            if content.get("name") != self._pending_name:
                self.flush_output()
                self._pending_name = content.get("name", "stdout")
            self._pending.append(content.get("text", ""))
            wait = self.spec.output_throttle_s - (time.monotonic() - self._last_flush)
            if wait <= 0:
                self.flush_output()
            elif self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_later(wait, self.flush_output)
        return super().output(outs, msg, display_id, cell_index)

    def flush_output(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._last_flush = time.monotonic()
        limit = self.spec.output_max_chars
        truncated = len(text) > limit
        self.emit(
            "job.output",
            {
                "cell_index": self.cell_index,
                "name": self._pending_name,
                "text": text[-limit:] if truncated else text,
                "truncated": truncated,
            },
        )


class Supervisor:
    """Runs the client and stops it on cancel, job timeout or cell timeout: interrupt, grace, kill."""

    def __init__(self, spec: RunSpec, client: _JobClient, kernel: Kernel, stop: asyncio.Event):
        self.spec = spec
        self.client = client
        self.kernel = kernel
        self.stop = stop

    def _next_deadline(self, job_deadline: float | None) -> tuple[float | None, str]:
        deadline, why = job_deadline, "job"
        if self.spec.cell_timeout_s and self.client.cell_started is not None:
            cell_deadline = self.client.cell_started + self.spec.cell_timeout_s
            if deadline is None or cell_deadline < deadline:
                deadline, why = cell_deadline, "cell"
        return deadline, why

    async def run(self) -> Outcome:
        spec, client = self.spec, self.client
        job_deadline = time.monotonic() + spec.timeout_s if spec.timeout_s else None
        task = asyncio.create_task(client.async_execute())
        stopper = asyncio.create_task(self.stop.wait())
        try:
            while True:
                deadline, why = self._next_deadline(job_deadline)
                wait_s = 0.25 if deadline is None else max(0.0, min(0.25, deadline - time.monotonic()))
                await asyncio.wait({task, stopper}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
                if task.done():
                    return self._finished(task)
                if self.stop.is_set():
                    return await self._halt(task, JobState.CANCELLED, "cancelled by request")
                if deadline is not None and time.monotonic() >= deadline:
                    if why == "cell":
                        reason = f"cell {client.cell_index} exceeded the cell timeout of {spec.cell_timeout_s:g} s"
                    else:
                        reason = f"job exceeded its timeout of {spec.timeout_s:g} s"
                    return await self._halt(task, JobState.TIMED_OUT, reason)
        finally:
            stopper.cancel()
            client.flush_output()

    def _finished(self, task: asyncio.Task[Any]) -> Outcome:
        exc = task.exception()
        if exc is None:
            return Outcome(JobState.SUCCEEDED)
        if isinstance(exc, DeadKernelError) or not self.kernel.km.has_kernel:
            code = self.kernel.exit_code()
            return Outcome(
                JobState.FAILED,
                JobError(reason=f"kernel died ({_signal_name(code)})", cell_index=self.client.cell_index),
            )
        if isinstance(exc, CellExecutionError):
            error = self.client.error or JobError(
                reason=f"cell {self.client.cell_index} raised {exc.ename}",
                cell_index=self.client.cell_index,
                ename=exc.ename,
                evalue=exc.evalue,
            )
            return Outcome(JobState.FAILED, error)
        log.exception("notebook execution failed", exc_info=exc)
        return Outcome(
            JobState.FAILED,
            JobError(reason=f"{type(exc).__name__}: {exc}", cell_index=self.client.cell_index),
        )

    async def _halt(self, task: asyncio.Task[Any], state: JobState, reason: str) -> Outcome:
        cell_index = self.client.cell_index
        await self.kernel.interrupt()
        done, _ = await asyncio.wait({task}, timeout=self.spec.interrupt_grace_s)
        if not done:
            await self.kernel.shutdown()  # the interrupt was ignored: kill
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        else:
            task.exception()  # retrieved: the interrupt's KeyboardInterrupt is expected here
        error = self.client.error
        return Outcome(
            state,
            JobError(
                reason=reason,
                cell_index=cell_index,
                ename=error.ename if error else None,
                evalue=error.evalue if error else None,
                traceback=error.traceback if error else [],
            ),
        )


def load_notebook(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


async def run_job(spec: RunSpec, pool: KernelPool, reports: ReportWriter, emit: Emit, stop: asyncio.Event) -> Outcome:
    """Run the job to a terminal outcome; never raises for anything the notebook or kernel does."""
    try:
        nb = load_notebook(spec.notebook_path)
        if spec.parameters:
            nb = inject_parameters(nb, spec.parameters)
    except Exception as exc:
        return Outcome(JobState.FAILED, JobError(reason=f"could not read the notebook: {exc}"[:2000]))
    try:
        kernel = await pool.acquire(spec.kernel_name)
    except Exception as exc:
        return Outcome(JobState.FAILED, JobError(reason=f"could not start kernel {spec.kernel_name!r}: {exc}"))
    shutdown: asyncio.Task[None] | None = None
    try:
        await _enter_folder(kernel, nb, spec.notebook_path.parent)
        client = _JobClient(nb, spec, emit, km=kernel.km, kernel_name=spec.kernel_name)
        client.kc = kernel.kc
        emit("job.started", {"total": client.total, "kernel": spec.kernel_name, "pid": kernel.pid})
        outcome = await Supervisor(spec, client, kernel, stop).run()
        # The kernel goes while the report is written; the job ends only when both are done.
        shutdown = asyncio.create_task(kernel.shutdown())
        try:
            await asyncio.to_thread(reports.write, nb, html_path=spec.report_path, ipynb_path=spec.output_path)
            outcome.report_written = True
        except Exception as exc:
            log.exception("report for job %s", spec.job_id)
            if outcome.state is JobState.SUCCEEDED:
                outcome = Outcome(JobState.FAILED, JobError(reason=f"the report could not be written: {exc}"))
        return outcome
    finally:
        await (shutdown if shutdown is not None else kernel.shutdown())


async def _enter_folder(kernel: Kernel, nb: nbformat.NotebookNode, folder: Path) -> None:
    """Warm kernels start in the workspace; a notebook runs in its own folder, as it would by hand."""
    language = nb.metadata.get("kernelspec", {}).get("language", "python")
    if language != "python":
        return
    reply = await kernel.kc.execute_interactive(
        f"import os as _nbrelay_os; _nbrelay_os.chdir({str(folder)!r}); del _nbrelay_os",
        silent=True,
        store_history=False,
        timeout=30,
    )
    if reply["content"].get("status") != "ok":
        raise RuntimeError(f"could not enter {folder}")
