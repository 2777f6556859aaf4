"""The first cell of the notebook and report of a run that did not succeed: what happened, and where, as papermill
puts an error cell at the top of a failed run's notebook. A report read later, mailed or downloaded, says why it
stopped without the job beside it (a cell killed after the grace period shows no output of its own).
"""

from __future__ import annotations

import re

import nbformat
from nbformat.v4 import new_markdown_cell

from nbrelay.models import JobError, JobState
from nbrelay.runner.notebook import runs

ENDED_TAG = "nbrelay-run-ended"  # the tag of that cell, for tools that read the notebook
ENDED = {JobState.FAILED: "failed", JobState.TIMED_OUT: "timed out", JobState.CANCELLED: "was cancelled"}
# Reasons and names are text, not markup: these would otherwise become emphasis, links, code or HTML.
_MARKUP = re.compile(r"([\\`*_\[\]<>&~|#])")


def markdown_text(value: str) -> str:
    """`value` as plain text in Markdown, on one line."""
    return _MARKUP.sub(r"\\\1", " ".join(value.split()))


def _cell_link(nb: nbformat.NotebookNode, number: int) -> str:
    """A link to code cell `number` (In [number]) of the report, by the cell's id (nbconvert's anchor)."""
    numbered = [cell for cell in nb.cells if runs(cell)]
    if not 0 < number <= len(numbered):
        return f"In \\[{number}\\]"
    return f"[In \\[{number}\\]](#cell-id={numbered[number - 1].get('id', '')})"


def ended_cell(
    job_id: int, state: JobState, error: JobError | None, nb: nbformat.NotebookNode
) -> nbformat.NotebookNode:
    """The cell that heads the notebook of job `job_id`, which ended in `state` with `error`."""
    reason = error.reason if error and error.reason else "no reason was recorded"
    if state is JobState.FAILED and error and error.ename and error.evalue and error.evalue.strip():
        detail = error.evalue.strip().splitlines()[0][:300]  # "cell 3 raised ValueError" → "…: boom"
        reason += f": {detail}" if reason.endswith(error.ename) else f" ({error.ename}: {detail})"
    lines = [f"## Job {job_id} {ENDED.get(state, state.value)}", "", f"- **What happened:** {markdown_text(reason)}"]
    if error and error.cell:
        lines.append(f"- **Where:** {_cell_link(nb, error.cell)}; the cells after it did not run.")
    cell = new_markdown_cell("\n".join(lines))
    cell.metadata["tags"] = [ENDED_TAG]
    return cell
