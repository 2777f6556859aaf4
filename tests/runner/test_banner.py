"""The cell that heads the notebook and report of a run that did not succeed."""

from __future__ import annotations

import nbformat

from nbrelay.models import JobError, JobState
from nbrelay.runner.banner import ENDED_TAG, ended_cell, markdown_text


def _notebook() -> nbformat.NotebookNode:
    cells = [
        nbformat.v4.new_markdown_cell("# Title"),
        nbformat.v4.new_code_cell("x = 1", id="first"),
        nbformat.v4.new_code_cell("", id="empty"),  # runs not: no number
        nbformat.v4.new_code_cell("raise ValueError('boom')", id="second"),
    ]
    return nbformat.v4.new_notebook(cells=cells)


def test_a_failure_says_what_was_raised_and_links_the_cell_by_its_number() -> None:
    error = JobError("cell 2 raised ValueError", cell=2, ename="ValueError", evalue="boom\nmore lines")
    cell = ended_cell(7, JobState.FAILED, error, _notebook())
    assert cell.metadata.tags == [ENDED_TAG]
    assert cell.source.splitlines() == [
        "## Job 7 failed",
        "",
        "- **What happened:** cell 2 raised ValueError: boom",
        "- **Where:** [In \\[2\\]](#cell-id=second); the cells after it did not run.",
    ]


def test_a_stop_between_cells_and_a_reason_that_names_no_exception() -> None:
    cell = ended_cell(3, JobState.CANCELLED, JobError("cancelled by request"), _notebook())
    assert cell.source == "## Job 3 was cancelled\n\n- **What happened:** cancelled by request"
    timed_out = JobError("cell 1 exceeded the cell timeout of 5 s", cell=1, ename="KeyboardInterrupt", evalue="x")
    assert (
        "- **What happened:** cell 1 exceeded the cell timeout of 5 s\n"
        in ended_cell(3, JobState.TIMED_OUT, timed_out, _notebook()).source
    )  # the interrupt it took is no news


def test_text_from_the_notebook_is_no_markup() -> None:
    error = JobError(
        "cell 2 raised Bad", cell=2, ename="Bad", evalue="<img src=x onerror=alert(1)> *[link](javascript:x)*"
    )
    source = ended_cell(1, JobState.FAILED, error, _notebook()).source
    assert "Bad: \\<img src=x onerror=alert(1)\\> \\*\\[link\\](javascript:x)\\*" in source  # all escaped
    assert markdown_text("a <b> [c](d) # e") == "a \\<b\\> \\[c\\](d) \\# e"
