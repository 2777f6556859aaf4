"""Run one notebook job in a worker process: parameters in, nbclient hooks out as events, a report always.

The caller gives a `RunSpec`, a kernel pool, a report writer, an `emit(type, data)` callback and a stop event
(set on cancel). Timeouts and cancel interrupt the kernel first and kill it after a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbclient.client
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from nbclient.util import run_hook

from nbrelay.errors import Unprocessable
from nbrelay.files import read_regular
from nbrelay.models import JobError, JobState
from nbrelay.runner import enter
from nbrelay.runner.banner import ended_cell
from nbrelay.runner.enter import ENTER_FAILED_EXIT
from nbrelay.runner.html import ReportWriter
from nbrelay.runner.kernels import Kernel, KernelPool
from nbrelay.runner.notebook import clear_outputs, complete_kernelspec, output_node, parse, runs
from nbrelay.runner.output_cap import OutputCap
from nbrelay.runner.params import check_parameters, declared_parameters, inject_parameters
from nbrelay.runner.report_pieces import ReportPieces
from nbrelay.runner.spec import RunSpec

log = logging.getLogger(__name__)
# nbclient makes each output with nbformat's output_from_msg, which checks it against the schema (runner/notebook.py,
# output_node): this worker's runs make them without. tests/runner/test_notebook.py holds nbclient to the name.
nbclient.client.output_from_msg = output_node

Emit = Callable[[str, dict[str, Any]], None]
REPORT_SWITCH_INTERVAL_S = 0.0005
INTERRUPT_AGAIN_S = 1.0  # a stop interrupts the kernel again this often until the run ends or the grace does
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Outcome:
    state: JobState
    error: JobError | None = None
    report_written: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)


def raised(cell: int | None, ename: str | None, memory_max_mb: int = 0) -> str:
    """Why a job failed in `cell` with exception `ename`, for people: MemoryError says out of memory, and which
    limit, when there is one (it is the likely cause)."""
    if ename == "MemoryError":
        limit = (
            f" (the kernel memory limit is {memory_max_mb} MB: NBRELAY_KERNEL_MEMORY_MAX_MB)" if memory_max_mb else ""
        )
        return f"cell {cell} ran out of memory{limit}"
    return f"cell {cell} raised {ename or 'an error'}"


def _signal_name(code: int | None) -> str:
    if code is None or code >= 0:
        return f"exit code {code}" if code is not None else "unknown exit"
    try:
        return f"signal {-code} {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def strip_ansi(lines: list[str]) -> list[str]:
    return [_ANSI.sub("", line) for line in lines]


class Halted(Exception):
    """Raised where a cell would start after the run was told to stop (timeout, cancel): no cell starts then."""


class _JobClient(NotebookClient):
    """nbclient with its hooks turned into progress and throttled output events.

    Cells are numbered as people count them and as the report shows them: the code cells nbclient runs (with
    source, not tagged skip-execution), from 1; cell n is In [n] in the report. Markdown and empty cells have no
    number. `cell` is the number of the cell running, or of the last one run.
    """

    def __init__(
        self,
        nb: nbformat.NotebookNode,
        spec: RunSpec,
        emit: Emit,
        pieces: ReportPieces,
        language_info: dict[str, Any] | None = None,
        stop: asyncio.Event | None = None,
        **kw: Any,
    ):
        super().__init__(
            nb,
            timeout=None,  # cell and job timeouts are enforced by the supervisor, which interrupts first
            allow_errors=False,
            record_timing=True,
            on_cell_start=self._cell_start,
            on_cell_execute=self._cell_execute,
            on_cell_executed=self._cell_executed,
            on_cell_error=self._cell_error,
            **kw,
        )
        self.spec = spec
        self.emit = emit
        self.pieces = pieces
        self.language_info = language_info
        self._metadata_known = False
        self.total = sum(1 for c in nb.cells if runs(c))
        self.started = time.monotonic()
        self.cell: int | None = None
        self.cell_started: float | None = None  # None between cells
        self.halted = False  # set when the run is stopped: the next cell does not start
        self._stop = stop  # a cancel: no cell starts once it is set, even before the supervisor has seen it
        self._running: nbformat.NotebookNode | None = None
        self.error: JobError | None = None
        self._pending: list[str] = []
        self._pending_name = "stdout"
        self._pending_chars = 0
        self._last_flush = 0.0
        self._flush_handle: asyncio.TimerHandle | None = None
        self.cap = OutputCap(spec.cell_output_max_chars, spec.job_output_max_chars)

    @contextlib.asynccontextmanager
    async def async_setup_kernel(self, **kwargs: Any) -> AsyncIterator[None]:
        """nbclient's setup without what it does for a kernel of its own: the pool's kernel is started, kept and
        ended by the pool, and the worker's signals are the worker's. nbclient put SIGINT and SIGTERM handlers on
        the worker's loop for each run, which shut the kernel down (found from outside: a Ctrl-C in the server's
        terminal killed the kernels of the runs under way, which the server was stopping in order), and on
        leaving, left SIGINT to raise KeyboardInterrupt in the worker, which had ignored it."""
        try:
            yield
        except RuntimeError:
            await run_hook(self.on_notebook_error, notebook=self.nb)
            raise
        finally:
            await run_hook(self.on_notebook_complete, notebook=self.nb)

    async def async_execute(self, reset_kc: bool = False, **kwargs: Any) -> nbformat.NotebookNode:
        """nbclient's run of the cells, without the kernel_info request it opens with when the kernel's answer to it
        is known (the pool's kernels gave it when they started): a round trip the first cell would wait for."""
        if self.language_info is None or reset_kc:
            return await super().async_execute(reset_kc=reset_kc, **kwargs)
        self.reset_execution_trackers()
        async with self.async_setup_kernel(**kwargs):
            self.nb.metadata["language_info"] = self.language_info
            for index, cell in enumerate(self.nb.cells):
                await self.async_execute_cell(cell, index, execution_count=self.code_cells_executed + 1)
            self.set_widgets_metadata()
        return self.nb

    # hooks ---------------------------------------------------------------------------------------------------
    def _cell_start(self, cell: Any, cell_index: int) -> None:
        # Called for every cell; by the first, nbclient has set the kernel's language_info in the metadata.
        if not self._metadata_known:
            self._metadata_known = True
            self.pieces.metadata_known()

    def _cell_execute(self, cell: Any, cell_index: int) -> None:
        # Called for the cells nbclient runs only, just before it sends them; it counts them as it numbers them.
        # An interrupt that reaches the kernel between two cells is lost: the next one never starts.
        if self.halted or (self._stop is not None and self._stop.is_set()):
            raise Halted(f"stopped before cell {self.code_cells_executed + 1}")
        self.cell = self.code_cells_executed + 1
        self.cell_started = time.monotonic()
        self._running = cell
        self.error = None
        self.cap.new_cell()

    @property
    def running(self) -> int | None:
        """The number of the cell running now, None between cells."""
        return self.cell if self.cell_started is not None else None

    def number_running_cell(self) -> None:
        """Give a cell stopped without a reply (killed kernel) its number in the report, as a reply would."""
        if self._running is not None and self.running is not None and self._running.get("execution_count") is None:
            self._running["execution_count"] = self.running

    def _cell_executed(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        self.flush_output()
        closing = self.cap.closing()
        if closing is not None:  # what was cut, said where it was cut, then the last of it
            cell.outputs.append(nbformat.v4.new_output("stream", name=closing[0], text=closing[1]))
        now = time.monotonic()
        done = self.cell or 0
        self.emit(
            "job.progress",
            {
                "cell": done,  # the cell that just finished: cells 1 to `cell` are done
                "total": self.total,
                "phase": "running_cells" if done < self.total else "writing_report",
                "elapsed_s": round(now - self.started, 3),
                "cell_duration_s": round(now - (self.cell_started or now), 3),
            },
        )
        self.cell_started = None
        self._running = None
        # nbclient still coalesces the cell's streams after this hook, without yielding: render it after that.
        asyncio.get_running_loop().call_soon(self.pieces.cell_done, cell_index)

    def _cell_error(self, cell: Any, cell_index: int, execute_reply: dict[str, Any]) -> None:
        content = execute_reply.get("content", {})
        self.error = JobError(
            reason=raised(self.cell, content.get("ename"), self.spec.kernel_memory_max_mb),
            cell=self.cell,
            ename=content.get("ename"),
            evalue=content.get("evalue"),
            traceback=strip_ansi(list(content.get("traceback") or [])),
        )

    # stream output, throttled ----------------------------------------------------------------------------------
    def output(self, outs: list[Any], msg: dict[str, Any], display_id: str | None, cell_index: int) -> Any:
        msg_type = msg["msg_type"]
        if msg_type == "stream":
            content = msg["content"]
            name, text = content.get("name", "stdout"), content.get("text", "")
            if name != self._pending_name:
                self.flush_output()
                self._pending_name = name
            self._pend(text)
            wait = self.spec.output_throttle_s - (time.monotonic() - self._last_flush)
            if wait <= 0:
                self.flush_output()
            elif self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_later(wait, self.flush_output)
            kept = self.cap.admit_stream(name, text)
            if not kept:
                return None
            if kept is not text:
                msg = {**msg, "content": {**content, "text": kept}}
        elif msg_type in ("display_data", "execute_result", "update_display_data"):
            data = msg["content"].get("data") or {}
            if not self.cap.admit_output(sum(len(str(v)) for v in data.values())):
                return None
        return super().output(outs, msg, display_id, cell_index)

    def _pend(self, text: str) -> None:
        """Queue text for the next live output event; only the last `output_max_chars` of it can be sent, so no
        more than that is held however fast the cell prints."""
        self._pending.append(text)
        self._pending_chars += len(text)
        limit = self.spec.output_max_chars
        if self._pending_chars > 2 * limit + 1024:
            joined = "".join(self._pending)
            self._pending[:] = [joined[-(limit + 1) :]]  # one more than shown, so "truncated" stays true
            self._pending_chars = len(self._pending[0])

    def flush_output(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        self._last_flush = time.monotonic()
        limit = self.spec.output_max_chars
        truncated = len(text) > limit
        self.emit(
            "job.output",
            {
                "cell": self.cell,
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
                if self.stop.is_set():  # before the run's end: a cancel may have ended it before a cell (Halted)
                    return await self._halt(task, JobState.CANCELLED, "cancelled by request")
                if task.done():
                    return self._finished(task)
                if deadline is not None and time.monotonic() >= deadline:
                    if why == "cell":
                        reason = f"cell {client.cell} exceeded the cell timeout of {spec.cell_timeout_s:g} s"
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
            if code == ENTER_FAILED_EXIT:
                folder = self.spec.notebook_path.parent
                return Outcome(JobState.FAILED, JobError(reason=f"could not enter the notebook's folder {folder}"))
            self.client.number_running_cell()
            return Outcome(
                JobState.FAILED,
                JobError(reason=f"kernel died ({_signal_name(code)})", cell=self.client.running),
            )
        if isinstance(exc, CellExecutionError):
            if exc.ename == "SystemExit" and exc.evalue in ("", "0"):
                return Outcome(JobState.SUCCEEDED)  # sys.exit(0): papermill's way to end a run early, as a success
            error = self.client.error or JobError(
                reason=raised(self.client.cell, exc.ename, self.spec.kernel_memory_max_mb),
                cell=self.client.cell,
                ename=exc.ename,
                evalue=exc.evalue,
            )
            return Outcome(JobState.FAILED, error)
        log.exception("notebook execution failed", exc_info=exc)
        return Outcome(
            JobState.FAILED,
            JobError(reason=f"{type(exc).__name__}: {exc}", cell=self.client.running),
        )

    async def _halt(self, task: asyncio.Task[Any], state: JobState, reason: str) -> Outcome:
        """Stop the run: no cell starts from now on, the running one is interrupted, and killed with the kernel
        after the grace period. The stopped cell is the one the run ended in (the deadline may pass as one cell
        ends and the next begins); a run whose every cell had ended before it could be stopped succeeded."""
        self.client.halted = True
        if await self._interrupt(task):
            if task.exception() is None:  # the last cell ended before the interrupt could stop it
                return Outcome(JobState.SUCCEEDED)
        else:
            await self.kernel.shutdown()  # the interrupt was ignored: kill
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.client.number_running_cell()
        error = self.client.error
        return Outcome(
            state,
            JobError(
                reason=reason,
                cell=error.cell if error else self.client.running,  # None: stopped between two cells
                ename=error.ename if error else None,
                evalue=error.evalue if error else None,
                traceback=error.traceback if error else [],
            ),
        )

    async def _interrupt(self, task: asyncio.Task[Any]) -> bool:
        """Interrupt the kernel until the run ends or the grace period does; whether it ended. Sent again every
        INTERRUPT_AGAIN_S: the kernel ignores an interrupt that reaches it before a cell's code starts."""
        end = time.monotonic() + self.spec.interrupt_grace_s
        while True:
            await self.kernel.interrupt()
            left = end - time.monotonic()
            if left <= 0:
                return task.done()
            done, _ = await asyncio.wait({task}, timeout=min(INTERRUPT_AGAIN_S, left))
            if done:
                return True


def load_notebook(path: Path, kernel_name: str | None = None) -> nbformat.NotebookNode:
    """The notebook at `path` as nbclient runs it (runner/notebook.py), without earlier outputs; its kernelspec
    names `kernel_name` when it named none."""
    nb = parse(read_regular(path, path.name))
    clear_outputs(nb)
    if kernel_name:
        complete_kernelspec(nb, kernel_name)
    return nb


async def run_job(
    spec: RunSpec,
    pool: KernelPool,
    reports: ReportWriter,
    emit: Emit,
    stop: asyncio.Event,
    *,
    still_ours: Callable[[], bool] | None = None,
) -> Outcome:
    """Run the job to a terminal outcome; never raises for anything the notebook or kernel does. `still_ours`: for
    a job on a lease, whether it still holds; no report is written once it does not (another run may own the
    job's report by then)."""
    try:
        nb = load_notebook(spec.notebook_path, spec.kernel_name)
        if spec.parameters:
            # Checked again: the file may have changed since the submission, and no longer declare them.
            check_parameters(declared_parameters(nb), spec.parameters)
            nb = inject_parameters(nb, spec.parameters)
    except FileNotFoundError:
        reason = f"the notebook {spec.notebook_path.name} is gone: moved or deleted since the job was submitted"
        return Outcome(JobState.FAILED, JobError(reason=reason))
    except Unprocessable as exc:
        reason = f"the notebook changed since the job was submitted: {exc.message}"
        return Outcome(JobState.FAILED, JobError(reason=reason[:2000]))
    except Exception as exc:
        return Outcome(JobState.FAILED, JobError(reason=f"could not read the notebook: {exc}"[:2000]))
    # Cells are counted once the kernel is up (job.started); until then clients say what is going on.
    emit("job.starting", {"kernel": spec.kernel_name})
    with _loop_first():
        return await _run(spec, nb, pool, reports, emit, stop, still_ours)


@contextlib.contextmanager
def _loop_first() -> Iterator[None]:
    """A shorter GIL switch interval while the job's report renders on its own thread: the event loop, which relays
    the kernel's messages, otherwise waits up to 5 ms for the GIL each time it wakes, long beside a short cell's
    messages (a run of big200's 100 short cells took ~0.5 s longer at 5 ms; at 0.5 ms, as long as without
    rendering beside it)."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(min(previous, REPORT_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


async def _run(
    spec: RunSpec,
    nb: nbformat.NotebookNode,
    pool: KernelPool,
    reports: ReportWriter,
    emit: Emit,
    stop: asyncio.Event,
    still_ours: Callable[[], bool] | None,
) -> Outcome:
    # The report is rendered as the job runs, from now on (inputs first, while the kernel starts), on a thread.
    pieces = reports.pieces(nb, spec.kernel_name, name=spec.notebook_path.stem)
    try:
        kernel = await pool.acquire(spec.kernel_name)
    except Exception as exc:
        pieces.close()
        return Outcome(JobState.FAILED, JobError(reason=f"could not start kernel {spec.kernel_name!r}: {exc}"))
    shutdown: asyncio.Task[None] | None = None
    try:
        _enter_folder(kernel, spec.notebook_path.parent)
        client = _JobClient(
            nb,
            spec,
            emit,
            pieces,
            language_info=kernel.language_info,
            stop=stop,
            km=kernel.km,
            kernel_name=spec.kernel_name,
        )
        client.kc = kernel.kc
        kernel.kc.allow_stdin = False  # as nbclient sets it: input() raises StdinNotImplementedError, never waits
        emit("job.started", {"total": client.total, "kernel": spec.kernel_name, "pid": kernel.pid})
        outcome = await Supervisor(spec, client, kernel, stop).run()
        if outcome.state is not JobState.SUCCEEDED:
            pieces.prepend(ended_cell(spec.job_id, outcome.state, outcome.error, nb))
        # The kernel's process goes while the report is written; the job ends only when both are done (its
        # clean-up after that is nothing the job waits for).
        shutdown = asyncio.create_task(kernel.kill())
        try:
            # Pieces still rendering are finished first; then the report is a join of them.
            written = pieces.write(html_path=spec.report_path, ipynb_path=spec.output_path, still_ours=still_ours)
            outcome.report_written = await asyncio.wrap_future(written)
            reports.learn(nb, spec.kernel_name)
        except Exception as exc:
            log.exception("report for job %s", spec.job_id)
            if outcome.state is JobState.SUCCEEDED:
                outcome = Outcome(JobState.FAILED, JobError(reason=f"the report could not be written: {exc}"))
        return outcome
    finally:
        pieces.close()
        await (shutdown if shutdown is not None else kernel.kill())
        pool.release_later(kernel)


def _enter_folder(kernel: Kernel, folder: Path) -> None:
    """Warm kernels start in the workspace; a notebook runs in its own folder, as it would by hand.

    A forked kernel is asked by a signal (runner/enter.py). Any other Python kernel is sent the chdir as a silent
    execute request, not awaited: the kernel carries out its shell requests in order, so the chdir is done before
    the first cell runs. Either way, should the folder be gone, the kernel exits with ENTER_FAILED_EXIT rather than
    run the cells elsewhere, and the job fails saying so (Supervisor).
    """
    pid, request_file = kernel.pid, kernel.enter_file
    if pid is not None and request_file is not None:
        with contextlib.suppress(ProcessLookupError):  # the kernel is gone: the Supervisor says so
            enter.ask(pid, request_file, folder)
        return
    # The kernel's own language: the notebook's metadata may not say it (nbclient does not need it to). A spec
    # that names none is taken for Python, as before.
    if kernel.language not in ("", "python"):
        return
    # The launch put the workspace (its folder) first on sys.path: the notebook's folder takes its place there.
    kernel.kc.execute(
        "import os as _nbrelay_os, sys as _nbrelay_sys\n"
        "_nbrelay_sys.path[:] = [p for p in _nbrelay_sys.path if p != _nbrelay_os.getcwd()]\n"
        f"try:\n    _nbrelay_os.chdir({str(folder)!r})\n"
        f"except OSError:\n    _nbrelay_os._exit({ENTER_FAILED_EXIT})\n"
        f"_nbrelay_sys.path.insert(0, {str(folder)!r})\n"
        "del _nbrelay_os, _nbrelay_sys",
        silent=True,
        store_history=False,
    )
