"""The runner on real kernels: outcomes, events, timeouts (interrupt then kill), cancel, a kernel that dies."""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

import nbrelay.runner.execute as execute
from nbrelay.models import JobState
from nbrelay.runner.banner import ENDED_TAG
from nbrelay.runner.execute import Outcome, run_job
from nbrelay.runner.html import ReportWriter
from nbrelay.runner.kernels import KernelPool
from nbrelay.runner.spec import RunSpec

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


@pytest.fixture(params=["forked", "launched"])
async def either_run(request: pytest.FixtureRequest, workspace: Path, tmp_path: Path) -> AsyncIterator[Run]:
    """A run on kernels forked by the zygote (told their folder by a signal) or launched by jupyter_client (sent
    a chdir request)."""
    pool = KernelPool(size=1, cwd=workspace, startup_timeout_s=60, fork=request.param == "forked")
    assert (pool.zygote is not None) == (request.param == "forked")
    yield Run(workspace, pool, tmp_path)
    await pool.close()


async def test_success_with_parameters_writes_report_and_events(run: Run) -> None:
    outcome = await run("params.ipynb", parameters={"n": 5, "label": "zebra-42", "items": [1, 2]})
    assert outcome.state is JobState.SUCCEEDED and outcome.error is None and outcome.report_written
    assert run.kinds()[:2] == ["job.starting", "job.started"]  # the kernel starts, then the cells are counted
    assert run.first("job.starting") == {"kernel": "python3"}
    total = run.first("job.started")["total"]
    progress = [data for _, kind, data in run.events if kind == "job.progress"]
    assert [p["cell"] for p in progress] == list(range(1, total + 1))
    assert [p["phase"] for p in progress] == ["running_cells"] * (total - 1) + ["writing_report"]
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
    assert (error.cell, error.ename, error.reason) == (2, "ValueError", "cell 2 raised ValueError")
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
    assert not (run.workspace / "ran.txt").exists()  # the cell did not run in the kernel's starting folder


# A cell that swallows interrupts for half a second and then ends as if none had come (the kernel takes no
# interrupt for it), followed by a cell that leaves a trace when it runs.
# The print is inside the try too: the stop comes as its output reaches the worker, and the interrupt can land while
# the kernel still waits in print's flush.
_SWALLOWS_INTERRUPTS = """import time
end, printed = time.monotonic() + 0.5, False
while time.monotonic() < end:
    try:
        if not printed:
            print("swallowing", flush=True)
            printed = True
        time.sleep(0.02)
    except KeyboardInterrupt:
        pass"""


async def _stop_on_first_output(run: Run) -> None:
    await run.seen["job.output"].wait()
    run.stop.set()


async def test_after_a_stop_no_further_cell_starts(run: Run) -> None:
    _write_notebook(run.workspace / "stop.ipynb", "x = 1", _SWALLOWS_INTERRUPTS, "open('ran3.txt', 'w').close()")
    canceller = asyncio.create_task(_stop_on_first_output(run))
    outcome = await run("stop.ipynb")
    await canceller
    assert not (run.workspace / "ran3.txt").exists()  # cell 3 never started, though the interrupt was lost
    assert outcome.state is JobState.CANCELLED and outcome.error is not None
    assert outcome.error.cell is None  # stopped between cells 2 and 3: no cell was stopped
    progress = [data["cell"] for _, kind, data in run.events if kind == "job.progress"]
    assert progress == [1, 2] and outcome.report_written


async def test_a_run_whose_last_cell_ends_before_the_stop_takes_effect_succeeds(run: Run) -> None:
    _write_notebook(run.workspace / "last.ipynb", _SWALLOWS_INTERRUPTS)
    canceller = asyncio.create_task(_stop_on_first_output(run))
    outcome = await run("last.ipynb")
    await canceller
    assert run.stop.is_set()
    assert outcome.state is JobState.SUCCEEDED and outcome.error is None and outcome.report_written


def _state(pid: int) -> str | None:
    """A process's state letter (Z for a zombie), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


async def test_what_a_notebook_started_ends_with_its_job(either_run: Run) -> None:
    """Found from outside: a process started in a session of its own outlived its job, the kernel and the
    server; a forked child was killed with the kernel's group but left a zombie in the worker for good."""
    pids = either_run.workspace / "pids.txt"
    _write_notebook(
        either_run.workspace / "spawns.ipynb",
        "import os, subprocess, sys, time\n"
        "detached = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
        "forked = os.fork()\n"
        "if forked == 0:\n"
        "    time.sleep(300)\n"
        "    os._exit(0)\n"
        f"open({str(pids)!r}, 'w').write(f'{{detached.pid}} {{forked}}')",
    )
    outcome = await either_run("spawns.ipynb")
    assert outcome.state is JobState.SUCCEEDED, outcome
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 2
    deadline = time.monotonic() + 5
    while any(_state(pid) is not None for pid in started) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # no event tells that a process is gone
    assert [_state(pid) for pid in started] == [None, None]  # neither running nor a zombie


async def test_a_kernel_gets_none_of_the_services_settings(either_run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found from outside: a notebook printed NBRELAY_SECRET_KEY, with which any user could sign a session as
    an admin; the database and SMTP passwords are settings of the same kind."""
    monkeypatch.setenv("NBRELAY_SECRET_KEY", "never-in-a-kernel")
    monkeypatch.setenv("NBRELAY_SMTP_PASSWORD", "never-in-a-kernel")
    monkeypatch.setenv("NOT_NBRELAYS", "a notebook's own")
    seen = either_run.workspace / "seen.txt"
    _write_notebook(
        either_run.workspace / "env.ipynb",
        "import os\n"
        "own = sorted(k for k in os.environ if k.startswith('NBRELAY_'))\n"
        "raw = open('/proc/self/environ', 'rb').read()\n"
        f"open({str(seen)!r}, 'w').write(repr((own, b'never-in-a-kernel' in raw, os.environ.get('NOT_NBRELAYS'))))",
    )
    outcome = await either_run("env.ipynb")
    assert outcome.state is JobState.SUCCEEDED, outcome
    assert seen.read_text() == repr(([], False, "a notebook's own"))


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
    assert outcome.error.cell == 3
    assert outcome.report_written
    # The killed cell got no reply, hence no execution count from nbclient: it is numbered as the error says.
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    assert executed.cells[0].metadata.tags == [ENDED_TAG]  # what happened, first
    assert [c.execution_count for c in executed.cells[1:]] == [1, 2, 3, None]


async def test_stream_output_is_throttled_and_complete(run: Run) -> None:
    outcome = await run("output.ipynb", parameters={"lines": 60, "delay": 0.01}, output_throttle_s=0.25)
    assert outcome.state is JobState.SUCCEEDED
    outputs = [d for _, k, d in run.events if k == "job.output"]
    assert "".join(d["text"] for d in outputs) == "".join(f"line {i}\n" for i in range(60))
    assert 2 <= len(outputs) <= 8  # ~0.6 s of printing, one event per 0.25 s, not one per line
    # Throttled flushes are at least 0.25 s apart; only the flush at the end of the cell may come sooner.
    times = [t for t, k, _ in run.events if k == "job.output"][:-1]
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times))


async def test_a_run_leaves_the_workers_signals_as_they_were(run: Run) -> None:
    """Found from outside: nbclient put SIGINT and SIGTERM handlers on the worker's loop for each run (a Ctrl-C
    in the server's terminal shut the kernels down under the server's own stop), and left SIGINT raising
    KeyboardInterrupt in a worker that ignores it."""
    loop = asyncio.get_running_loop()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a worker process sets it
    try:
        _write_notebook(run.workspace / "signals.ipynb", "import time\ntime.sleep(0.5)")
        running = asyncio.create_task(run("signals.ipynb"))
        await run.seen["job.started"].wait()
        assert signal.SIGINT not in getattr(loop, "_signal_handlers", {})
        assert (await running).state is JobState.SUCCEEDED
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


async def test_missing_notebook_fails_cleanly(run: Run) -> None:
    """Its name and what happened, not the server's path to it (found from outside: "[Errno 2] … '/srv/…'")."""
    outcome = await run("gone.ipynb")
    assert outcome.state is JobState.FAILED
    assert outcome.error is not None
    assert outcome.error.reason == "the notebook gone.ipynb is gone: moved or deleted since the job was submitted"
    assert run.events == []


async def test_parameters_the_notebook_no_longer_declares_fail_the_run_before_it_starts(run: Run) -> None:
    """Found from outside: the parameters were checked at the submission, and the job ran the file as it was
    later, with a parameter its new version does not declare injected."""
    path = run.workspace / "changed.ipynb"
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell('name: str = "x"', metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("open('ran.txt', 'w').close()"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)  # the version that runs; the job was submitted with {"n": 5} against `n: int = 1`
    outcome = await run("changed.ipynb", parameters={"n": 5})
    assert outcome.state is JobState.FAILED and outcome.error is not None
    assert outcome.error.reason.startswith("the notebook changed since the job was submitted: parameter 'n': unknown")
    assert "name" in outcome.error.reason  # what it declares now
    assert not (run.workspace / "ran.txt").exists() and run.events == []


async def test_ipython_history_works_as_under_nbclient(run: Run) -> None:
    """Notebooks that read their history (%history, In/_ih, history_manager) end as they do under nbclient."""
    cells = [
        "a = 1",
        "%history -l 1",
        "hm = get_ipython().history_manager\nassert hm.enabled\nprint(len(list(hm.get_range())))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, run.workspace / "history.ipynb")
    outcome = await run("history.ipynb")
    assert outcome.state is JobState.SUCCEEDED, outcome.error
    output = "".join(data["text"] for _, kind, data in run.events if kind == "job.output")
    assert "a = 1" in output  # %history printed the first cell
    assert int(output.strip().splitlines()[-1]) >= 2


async def test_an_output_flood_is_capped_in_the_notebook_and_report(run: Run) -> None:
    source = "import sys\nfor i in range(200_000):\n    sys.stdout.write(f'line {i:06d}\\n')"  # 2.6 M characters
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source), nbformat.v4.new_code_cell("print('after')")]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, run.workspace / "flood.ipynb")
    outcome = await run("flood.ipynb", cell_output_max_chars=20_000, job_output_max_chars=100_000)
    assert outcome.state is JobState.SUCCEEDED, outcome.error
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    text = "".join(o.get("text", "") for o in executed.cells[0].outputs)
    assert len(text) < 21_000
    assert text.startswith("line 000000\n") and text.endswith("line 199999\n")  # head and tail kept
    assert "of output over the limits" in text
    assert "after" in "".join(o.get("text", "") for o in executed.cells[1].outputs)
    assert len(run.report()) < 1_000_000
    live = [data for _, kind, data in run.events if kind == "job.output"]
    assert all(len(data["text"]) <= 4000 for data in live) and live[-1]["text"].endswith("after\n")


async def test_a_flood_of_display_messages_loses_none(run: Run) -> None:
    """Found from outside: 20,000 `display(i)` kept 19,551 outputs in one run and 13,274 in another, with no word
    of it, and the job succeeded: each is a message of its own, and ZeroMQ drops what is over a queue's limit."""
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell("for i in range(20_000):\n    display(i)"), nbformat.v4.new_code_cell("1")]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, run.workspace / "displays.ipynb")
    # The worker's loop held up for a while mid-flood (a busy machine, a slow report): thousands of messages wait.
    asyncio.get_running_loop().call_later(2.0, time.sleep, 3.0)
    outcome = await run("displays.ipynb")
    assert outcome.state is JobState.SUCCEEDED, outcome.error
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    shown = [int(o["data"]["text/plain"]) for o in executed.cells[0].outputs if "data" in o]
    assert shown == list(range(20_000))


async def test_cells_are_numbered_as_the_report_shows_them(run: Run, workspace: Path) -> None:
    """Cell n is the n-th code cell that runs (markdown and empty cells have no number), In [n] in the report: in
    the error, the progress and the output events."""
    outcome = await run("compat/raises_in_cell_3.ipynb")
    assert outcome.state is JobState.FAILED and outcome.error is not None
    assert (outcome.error.cell, outcome.error.reason) == (3, "cell 3 raised ValueError")
    assert run.first("job.started")["total"] == 4
    progress = [d for _, k, d in run.events if k == "job.progress"]
    assert [p["cell"] for p in progress] == [1, 2, 3]
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    failing = next(c for c in executed.cells if c.cell_type == "code" and "raised in cell 3" in c.source)
    assert failing.execution_count == 3
    report = run.report()
    assert re.search(r"In\s\[3\]:</div>", report)  # nbconvert's prompt (its space is a no-break one)
    # The report opens with what happened, and links to the cell (papermill puts an error cell at the top).
    banner = executed.cells[0]
    assert banner.metadata.tags == [ENDED_TAG] and banner.source.startswith("## Job 1 failed")
    assert "cell 3 raised ValueError: raised in cell 3" in banner.source
    assert f'<a href="#cell-id={failing.id}">In [3]</a>' in report and f'id="cell-id={failing.id}"' in report


async def test_output_events_name_their_cell(run: Run) -> None:
    outcome = await run("compat/display_outputs.ipynb")
    assert outcome.state is JobState.SUCCEEDED, outcome.error
    outputs = [d for _, k, d in run.events if k == "job.output"]
    assert {(d["cell"], d["name"]) for d in outputs if "to std" in d["text"]} == {(2, "stderr"), (2, "stdout")}


async def test_a_cell_timeout_names_the_cell_as_the_report_numbers_it(run: Run) -> None:
    # sleep.ipynb with parameters: the parameters cell, the injected one, import, print, then the sleep (cell 5).
    outcome = await run("sleep.ipynb", parameters={"seconds": 60}, cell_timeout_s=1)
    assert outcome.state is JobState.TIMED_OUT and outcome.error is not None
    assert (outcome.error.cell, outcome.error.reason) == (5, "cell 5 exceeded the cell timeout of 1 s")
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    assert [c.execution_count for c in executed.cells[1:]] == [1, 2, 3, 4, 5, None]  # after what happened


async def test_input_is_refused_as_under_nbclient(run: Run) -> None:
    """input() raises at once (nbclient's allow_stdin = False) instead of waiting for an answer nobody can give."""
    outcome = await run("compat/input_refused.ipynb", timeout_s=60)
    assert outcome.state is JobState.FAILED and outcome.error is not None
    assert (outcome.error.cell, outcome.error.ename) == (2, "StdinNotImplementedError")


async def test_skipped_and_allowed_to_fail_cells_as_under_nbclient(run: Run) -> None:
    """A cell tagged skip-execution does not run and has no number; one tagged raises-exception may fail."""
    outcome = await run("compat/tags.ipynb")
    assert outcome.state is JobState.FAILED and outcome.error is not None
    assert (outcome.error.cell, outcome.error.ename) == (3, "AttributeError")
    assert run.first("job.started")["total"] == 3


@pytest.mark.parametrize(
    "notebook",
    ["compat/kernelspec_without_name.ipynb", "compat/no_kernelspec.ipynb", "compat/nbformat_4_1.ipynb"],
)
async def test_metadata_nbclient_accepts_runs_and_the_executed_notebook_is_valid(run: Run, notebook: str) -> None:
    outcome = await run(notebook)
    assert outcome.state is JobState.SUCCEEDED, outcome.error
    executed = nbformat.reads((run.tmp_path / "out" / "executed.ipynb").read_text(), as_version=4)
    nbformat.validate(executed)
    assert executed.nbformat_minor == 5
    assert executed.metadata.language_info.name == "python"  # from the kernel, as nbclient records it
    kernelspec = executed.metadata.get("kernelspec")
    assert kernelspec is None or kernelspec.name == "python3"


def _write_notebook(path: Path, *sources: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


async def test_a_notebook_runs_in_its_own_folder(either_run: Run) -> None:
    """Its first cell already runs there (the kernel is told ahead of the cells, not waited for)."""
    run = either_run
    _write_notebook(run.workspace / "deep" / "er" / "here.ipynb", "print(open('data.txt').read())")
    (run.workspace / "deep" / "er" / "data.txt").write_text("next to the notebook")
    outcome = await run("deep/er/here.ipynb")
    assert outcome.state is JobState.SUCCEEDED, outcome.error
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"] == "next to the notebook\n"
    assert executed.cells[0].execution_count == 1  # the chdir left no trace in the count


async def test_modules_next_to_the_notebook_come_first_and_the_entry_signal_is_the_notebooks(either_run: Run) -> None:
    """As in a kernel started in the notebook's folder by hand (papermill's): found from outside, the folder the
    server was started in came first on a forked kernel's path, so its `utils.py` shadowed the notebook's own,
    and the kernel kept the handler it entered its folder with."""
    run = either_run
    folder = run.workspace / "mods"
    _write_notebook(
        folder / "nb.ipynb",
        "import json, os, signal, sys, shadowed\n"
        "print(json.dumps([sys.path, shadowed.WHO, signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL]))",
    )
    (folder / "shadowed.py").write_text("WHO = 'next to the notebook'\n")
    (run.workspace / "shadowed.py").write_text("WHO = 'the workspace'\n")
    outcome = await run("mods/nb.ipynb")
    assert outcome.state is JobState.SUCCEEDED, outcome.error
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    path, who, default_handler = json.loads(executed.cells[0].outputs[0]["text"])
    assert who == "next to the notebook"
    assert path[0] == str(folder)
    assert os.getcwd() not in path and str(run.workspace) not in path  # where the server and the kernel started
    assert default_handler


async def test_cells_the_run_does_not_reach_show_nothing_of_an_earlier_run(run: Run) -> None:
    """Found from outside: after a failure the cells never run kept the outputs and In [n] saved in the file, so the
    report showed them as if they had run (papermill clears every code cell first)."""
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("print('fresh')"),
            nbformat.v4.new_code_cell(""),
            nbformat.v4.new_code_cell("raise ValueError('boom')"),
            nbformat.v4.new_code_cell("print('later')"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for i, cell in enumerate(nb.cells):
        cell.execution_count = 10 + i
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"STALE OUTPUT OF CELL {i}\n")]
    nbformat.write(nb, run.workspace / "stale.ipynb")
    outcome = await run("stale.ipynb")
    assert outcome.state is JobState.FAILED
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    code = executed.cells[1:]  # after the cell that says what happened
    assert [cell.execution_count for cell in code] == [1, None, 2, None]
    assert [len(cell.outputs) for cell in code] == [1, 0, 1, 0]
    assert "STALE" not in run.report()


@pytest.mark.parametrize(
    ("ending", "state"),
    [
        ("sys.exit()", JobState.SUCCEEDED),
        ("sys.exit(0)", JobState.SUCCEEDED),
        ("raise SystemExit", JobState.SUCCEEDED),
        ("sys.exit(3)", JobState.FAILED),
        ("sys.exit('bad input')", JobState.FAILED),
    ],
)
async def test_sys_exit_0_ends_the_run_early_as_a_success_as_under_papermill(
    run: Run, ending: str, state: JobState
) -> None:
    _write_notebook(run.workspace / "exits.ipynb", f"import sys\nprint('before')\n{ending}", "print('after')")
    outcome = await run("exits.ipynb")
    assert outcome.state is state, outcome.error
    executed = nbformat.read(run.tmp_path / "out" / "executed.ipynb", as_version=4)
    code = [cell for cell in executed.cells if cell.cell_type == "code"]
    assert code[1].outputs == []  # the run ended there either way
    if state is JobState.FAILED:
        assert outcome.error is not None and outcome.error.ename == "SystemExit" and outcome.error.cell == 1


async def test_a_cancel_that_comes_before_the_first_cell_runs_no_cell(run: Run) -> None:
    """Found from outside: a job cancelled right after its submission ran its first cells, since the run skips the
    kernel_info round trip and sent the first cell before the supervisor looked at the cancel."""
    _write_notebook(run.workspace / "writes.ipynb", "open('ran.txt', 'w').close()")
    run.stop.set()
    outcome = await run("writes.ipynb")
    assert outcome.state is JobState.CANCELLED and outcome.error is not None
    assert outcome.error.reason == "cancelled by request" and outcome.error.cell is None
    assert not (run.workspace / "ran.txt").exists()
    assert outcome.report_written  # showing that no cell ran


async def test_a_notebook_whose_folder_went_away_fails_without_running_elsewhere(
    either_run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = either_run
    _write_notebook(run.workspace / "gone" / "nb.ipynb", "open('ran.txt', 'w').close()")
    loaded = execute.load_notebook

    def load_then_remove(path: Path, kernel_name: str) -> Any:
        nb = loaded(path, kernel_name)
        shutil.rmtree(path.parent)  # removed between the read and the run
        return nb

    monkeypatch.setattr(execute, "load_notebook", load_then_remove)
    outcome = await run("gone/nb.ipynb")
    assert outcome.state is JobState.FAILED
    assert outcome.error is not None
    assert outcome.error.reason == f"could not enter the notebook's folder {run.workspace / 'gone'}"
    assert not pid_exists(run.first("job.started")["pid"])
    assert not (run.workspace / "ran.txt").exists()  # the cell did not run in the kernel's starting folder
