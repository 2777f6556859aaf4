"""The partial report of a job whose run ended without reporting: the notebook part (pure), then the recorder
writing it for `end()` and for terminal events without a report, on a real SQLite store and no kernel."""

from __future__ import annotations

import copy
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbrelay.config import Settings
from nbrelay.models import Event, Job, JobError, JobState
from nbrelay.recorder import JobRecorder
from nbrelay.runner.html import ReportWriter
from nbrelay.runner.partial import PARTIAL_TAG, explanation, partial_notebook, write_partial_report
from nbrelay.store import NewJob
from nbrelay.store.sql import SqlJobStore

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
STARTED = datetime(2024, 5, 1, 12, 0, 5, tzinfo=UTC)
ENDED = datetime(2024, 5, 1, 13, 2, 9, tzinfo=UTC)


def load(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def ended(**kw: Any) -> Job:
    facts: dict[str, Any] = {
        "id": 7,
        "owner": "alice",
        "notebook": "sleep.ipynb",
        "kernel_name": "python3",
        "parameters": {"seconds": 5.5},
        "state": JobState.FAILED,
        "started_at": STARTED,
        "finished_at": ENDED,
        "progress_cell": 2,
        "progress_total": 4,
        "error": JobError(reason="worker process died (exit code -9)"),
    }
    return Job(**(facts | kw))


# the notebook (pure) ------------------------------------------------------------------------------------------------
def test_the_first_cell_says_what_happened_how_far_and_when() -> None:
    text = explanation(ended())
    assert "job 7 failed" in text
    assert "worker process died (exit code -9)" in text
    # progress_cell counts finished code cells; people count from 1, so the run was in the third.
    assert "2 of its 4 code cells had finished; it stopped in code cell 3 of 4" in text
    assert "2024-05-01 12:00:05 UTC" in text and "2024-05-01 13:02:09 UTC" in text
    assert "(1 h 2 min 4 s)" in text
    assert "sleep.ipynb" in text and "outputs were lost" in text


@pytest.mark.parametrize(
    ("state", "cell", "total", "said"),
    [
        (JobState.FAILED, 0, 0, "it ended before its first code cell ran"),
        (JobState.FAILED, 0, 4, "0 of its 4 code cells had finished; it stopped in code cell 1 of 4"),
        (JobState.TIMED_OUT, 4, 4, "all 4 code cells had finished; it ended before its report was written"),
        (JobState.CANCELLED, 1, 3, "it stopped in code cell 2 of 3"),
    ],
)
def test_how_far_it_got(state: JobState, cell: int, total: int, said: str) -> None:
    text = explanation(ended(state=state, progress_cell=cell, progress_total=total))
    assert said in text
    assert {"failed": "job 7 failed", "timed_out": "job 7 timed out", "cancelled": "job 7 was cancelled"}[
        state.value
    ] in text


def test_a_later_attempt_and_unknown_times_are_said_too() -> None:
    text = explanation(ended(attempt=3, started_at=None, error=None))
    assert "**Attempt:** 3" in text
    assert "**Started:** not recorded" in text and "no reason was recorded" in text


def test_the_notebook_gets_the_parameters_no_outputs_and_the_explanation_first() -> None:
    source = load("sleep.ipynb")
    source.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="from an earlier run\n")]
    source.cells[2].execution_count = 3
    before = copy.deepcopy(source)

    nb = partial_notebook(source, ended())

    assert source == before  # the caller's notebook is left as it was
    first = nb.cells[0]
    assert first.cell_type == "markdown" and first.metadata["tags"] == [PARTIAL_TAG]
    assert first.source == explanation(ended())
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "seconds = 5.5" in injected[0].source
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    assert [c.source for c in code if "injected-parameters" not in c.metadata["tags"]] == [
        c.source for c in source.cells
    ]
    nbformat.validate(nb)


def test_without_parameters_nothing_is_injected() -> None:
    nb = partial_notebook(load("tiny.ipynb"), ended(notebook="tiny.ipynb", parameters={}))
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert len(nb.cells) == len(load("tiny.ipynb").cells) + 1


def test_reasons_and_names_stay_text_in_the_report() -> None:
    job = ended(notebook="a_*b*_.ipynb", error=JobError(reason="<script>alert(1)</script> [x](javascript:1) `c`"))
    html = ReportWriter().to_html(partial_notebook(load("tiny.ipynb"), job))
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript' not in html and "a_*b*_.ipynb" in html


def test_write_partial_report_writes_both_files_or_raises_when_the_notebook_is_gone(tmp_path: Path) -> None:
    html_path, ipynb_path = tmp_path / "r" / "sleep.html", tmp_path / "r" / "sleep.ipynb"
    write_partial_report(ended(), notebook_path=NOTEBOOKS / "sleep.ipynb", html_path=html_path, ipynb_path=ipynb_path)
    assert "worker process died (exit code -9)" in html_path.read_text()
    written = nbformat.read(ipynb_path, as_version=4)
    assert written.cells[0].metadata["tags"] == [PARTIAL_TAG]
    # Written from report pieces, as a run's report is: the plain export of the notebook written beside it.
    assert html_path.read_text() == ReportWriter().to_html(written, "sleep")  # titled by the notebook's name
    with pytest.raises(FileNotFoundError):
        write_partial_report(
            ended(), notebook_path=tmp_path / "gone.ipynb", html_path=tmp_path / "x.html", ipynb_path=tmp_path / "x"
        )
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "x").exists()


# the recorder --------------------------------------------------------------------------------------------------------
@pytest.fixture
async def recorder(tmp_path: Path, workspace: Path) -> AsyncIterator[JobRecorder]:
    settings = Settings(workspace=workspace, data_dir=tmp_path / "data")
    store = SqlJobStore(settings.database_url)
    await store.start()
    try:
        yield JobRecorder(settings, store, worker="here:1:abc")
    finally:
        await store.close()


async def running(recorder: JobRecorder, notebook: str = "sleep.ipynb") -> Job:
    job = await recorder.store.add_job(NewJob(owner="alice", notebook=notebook, kernel_name="python3"))
    claimed = await recorder.store.claim(recorder.worker, lease_s=None)
    assert claimed is not None and claimed.id == job.id
    await recorder.store.update_progress(job.id, 1, 4)
    return (await recorder.store.get_job(job.id)) or claimed


async def test_end_writes_a_partial_report(recorder: JobRecorder) -> None:
    told: list[Event] = []

    async def listen(event: Event) -> None:
        told.append(event)

    recorder.listeners.append(listen)
    job = await running(recorder)
    done = await recorder.end(job, JobState.FAILED, "interrupted: server restarted")
    saved = await recorder.store.get_job(job.id)
    assert done is not None and saved is not None and saved.state is JobState.FAILED
    assert saved.report_path and saved.output_path
    text = Path(saved.report_path).read_text()
    assert "interrupted: server restarted" in text and "stopped in code cell 2 of 4" in text
    assert told[-1].data["report_url"] == f"/api/jobs/{job.id}/report"


async def test_a_terminal_event_without_a_report_gets_a_partial_one(recorder: JobRecorder) -> None:
    job = await running(recorder)
    reason = "cancelled by request (worker killed after the grace period)"
    await recorder.on_event(
        Event("job.cancelled", {"job": job.id, "state": "cancelled", "error": {"reason": reason}, "report": False})
    )
    saved = await recorder.store.get_job(job.id)
    assert saved is not None and saved.state is JobState.CANCELLED and saved.report_path
    assert reason in Path(saved.report_path).read_text()


async def test_a_deleted_notebook_ends_the_job_without_a_report_and_says_why(
    recorder: JobRecorder, workspace: Path, caplog: pytest.LogCaptureFixture
) -> None:
    job = await running(recorder)
    (workspace / "sleep.ipynb").unlink()
    with caplog.at_level(logging.WARNING, logger="nbrelay.recorder"):
        done = await recorder.end(job, JobState.FAILED, "interrupted: server restarted")
    saved = await recorder.store.get_job(job.id)
    assert done is not None and saved is not None and saved.state is JobState.FAILED
    assert saved.report_path is None and saved.output_path is None
    assert f"job {job.id} ends without a report" in caplog.text and "sleep.ipynb" in caplog.text
