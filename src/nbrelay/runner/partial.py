"""The partial report of a job that ended without its runner reporting (a dead worker process, a restarted server,
a lost worker): the job's notebook with its parameters, no outputs, and a first cell saying what happened.
"""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path

import nbformat
from nbformat.v4 import new_markdown_cell

from nbrelay.models import Job
from nbrelay.runner.banner import ENDED, markdown_text
from nbrelay.runner.execute import load_notebook
from nbrelay.runner.html import ReportWriter
from nbrelay.runner.notebook import clear_outputs
from nbrelay.runner.params import inject_parameters

__all__ = ["PARTIAL_TAG", "explanation", "partial_notebook", "write_partial_report"]

PARTIAL_TAG = "nbrelay-partial-report"  # the tag of the explanation cell, for tools that read the notebook


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S UTC") if at is not None else "not recorded"


def _duration(seconds: float) -> str:
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    parts = [f"{hours} h"] if hours else []
    if hours or m:
        parts.append(f"{m} min")
    return " ".join([*parts, f"{s} s"])


def _progress(done: int, total: int) -> str:
    if total <= 0:
        return "it ended before its first code cell ran."
    if done >= total:
        return f"all {total} code cells had finished; it ended before its report was written."
    # People count cells from 1: with 2 of 5 finished, the run was in the third.
    return f"{done} of its {total} code cells had finished; it stopped in code cell {done + 1} of {total}."


def explanation(job: Job) -> str:
    """The first cell's text: what happened to the job, how far it got, when it started and ended."""
    reason = job.error.reason if job.error and job.error.reason else "no reason was recorded"
    ended = ENDED.get(job.state, job.state.value)
    times = f"**Started:** {_when(job.started_at)} · **ended:** {_when(job.finished_at)}"
    if job.duration_s is not None and job.finished_at is not None:
        times += f" ({_duration(job.duration_s)})"
    lines = [
        f"## Partial report: job {job.id} {ended}",
        "",
        f"- **What happened:** {markdown_text(reason)}",
        f"- **How far it got:** {_progress(job.progress_cell, job.progress_total)}",
        f"- {times}",
    ]
    if job.attempt > 1:
        lines.append(f"- **Attempt:** {job.attempt}")
    lines += [
        "",
        "The run ended without reporting, and its outputs were lost with it. Below is the notebook "
        f"{markdown_text(job.notebook)} as it is now, with the job's parameters, not run.",
    ]
    return "\n".join(lines)


def partial_notebook(nb: nbformat.NotebookNode, job: Job) -> nbformat.NotebookNode:
    """A copy of `nb` as the ended `job` would have run it (parameters injected), without outputs, after a cell
    that explains what happened. `nb` is left as it was."""
    out = copy.deepcopy(nb)
    if job.parameters:
        out = inject_parameters(out, job.parameters)
    clear_outputs(out)  # outputs saved in the notebook are not this run's: the run's own died with it
    cell = new_markdown_cell(explanation(job))
    cell.metadata["tags"] = [PARTIAL_TAG]
    out.cells.insert(0, cell)
    return out


def write_partial_report(job: Job, *, notebook_path: Path, html_path: Path, ipynb_path: Path) -> None:
    """Read the job's notebook and write its partial report and notebook (each atomically). Blocking: run it in a
    thread. Raises when the notebook cannot be read any more (moved, deleted, no longer valid)."""
    nb = partial_notebook(load_notebook(notebook_path, job.kernel_name), job)
    # A writer of its own: this is rare, and an exporter is not shared between threads.
    ReportWriter().write(nb, html_path=html_path, ipynb_path=ipynb_path, name=notebook_path.stem)
