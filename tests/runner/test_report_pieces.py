"""A job's report, rendered cell by cell as it runs, is the plain export of the notebook it ran, byte for byte:
run to the end, failed, cancelled, with displays updated after their cell ended, and for the repository's notebooks.

There is no documented difference to normalise: the pieces ignore only what no template shows (a cell's
`metadata.execution` timing) and skip only checks that raise rather than change the output (the schema validation
nbconvert runs after each preprocessor, and its normalisation of a notebook already checked when it was read), so
the comparisons below are plain string equality. Where a join could not be equal (a cell's HTML reaching outside
it, a text running from one cell into the next) the report is the plain export, which these tests also compare.
"""

from __future__ import annotations

import asyncio
import copy
import html
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbrelay.models import JobState
from nbrelay.runner.execute import Outcome, run_job
from nbrelay.runner.html import ReportWriter
from nbrelay.runner.kernels import KernelPool
from nbrelay.runner.notebook import complete_kernelspec, parse
from nbrelay.runner.report_pieces import piece_html
from nbrelay.runner.spec import RunSpec

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "src" / "nbrelay" / "examples" / "workspace"
STORED = sorted(
    p
    for p in [*(ROOT / "tests" / "notebooks").rglob("*.ipynb"), *EXAMPLES.glob("*.ipynb")]
    if p.name not in ("invalid_schema.ipynb", "malformed.ipynb")  # refused before any report
)


def plain(nb: nbformat.NotebookNode, name: str = "Notebook") -> str:
    return ReportWriter().to_html(copy.deepcopy(nb), name)


def incremental(nb: nbformat.NotebookNode, writer: ReportWriter | None = None) -> str:
    pieces = (writer or ReportWriter()).pieces(nb)
    try:
        return str(pieces.submit(pieces.assemble, nb).result())
    finally:
        pieces.close()


# without a kernel ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", STORED, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_stored_notebook_is_reported_as_the_plain_export(path: Path) -> None:
    nb = parse(path.read_bytes())
    complete_kernelspec(nb, "python3")  # as the runner does for a notebook that names no kernel
    assert incremental(nb) == plain(nb)


@pytest.mark.parametrize("html", ["</div>", "<div>", "<p>text</div>", "<script>let a = 1;", "<!-- open"])
def test_html_that_would_reach_outside_its_cell_is_no_piece(html: str) -> None:
    assert piece_html(html) is None


def test_html_that_stays_inside_its_cell_is_a_piece() -> None:
    assert piece_html("<div><p>closed by its div</div>") is not None  # in the document too: within the cell
    piece = piece_html('<div class="jp-OutputArea-output"><img src="x.png"><br>&nbsp;a &amp; b</div>')
    assert piece is not None
    html, missing = piece
    assert html == (
        '<div class="jp-OutputArea-output" tabindex="0">'
        '<img alt="No description has been provided for this image" src="x.png"/><br/>\xa0a &amp; b</div>'
    )
    assert missing == 1


def html_cell(html: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell("show()", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("display_data", {"text/html": html, "text/plain": "x"})]
    return cell


@pytest.mark.parametrize(
    "outputs",
    [
        ["<b>fine</b>", "</div></div>cut", "<i>"],
        ["<b>fine</b>", "<div>opened here", "closed here</div>", "<b>fine</b>"],  # balanced only together
    ],
)
def test_a_cell_whose_html_spills_makes_the_whole_report_the_plain_export(outputs: list[str]) -> None:
    # The cells end together, so their pieces are rendered in one batch first, then one by one.
    nb = nbformat.v4.new_notebook(cells=[html_cell(html) for html in outputs])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert incremental(nb) == plain(nb)


def test_text_that_would_run_from_one_cell_into_the_next() -> None:
    # Raw cells are written as they are: text and blanks next to the following cell's leading newline (a text of
    # blanks is written as one blank by nbconvert's pass, so joining pieces would not give the same).
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# Title"),
            nbformat.v4.new_raw_cell("plain text"),
            nbformat.v4.new_markdown_cell("after text"),
            nbformat.v4.new_raw_cell("  \n "),
            nbformat.v4.new_markdown_cell("after blanks"),
            nbformat.v4.new_raw_cell("<b>bold</b> tail"),
            nbformat.v4.new_code_cell("x = 1  # <b>not markup</b> &amp;", execution_count=1),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert incremental(nb) == plain(nb)


def test_cells_changed_after_their_piece_are_rendered_again() -> None:
    nb = parse((ROOT / "tests" / "notebooks" / "big200.ipynb").read_bytes())
    writer = ReportWriter()
    pieces = writer.pieces(nb)
    try:
        code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
        nb.cells[code[0]].outputs[0]["text"] = "changed, and told\n"
        pieces.cell_done(code[0])
        nb.cells[code[1]].outputs = []  # changed without being told (an update_display_data, a killed cell)
        nb.cells[code[2]].execution_count = 99
        nb.cells[code[3]].metadata["execution"] = {"iopub.status.idle": "2026-12-04T00:00:00Z"}  # shown nowhere
        nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
        pieces.metadata_known()
        report = pieces.submit(pieces.assemble, nb).result()
    finally:
        pieces.close()
    assert "changed, and told" in report
    assert report == plain(nb)


# on a real kernel ------------------------------------------------------------------------------------------------
@pytest.fixture
async def pool(workspace: Path) -> AsyncIterator[KernelPool]:
    for example in EXAMPLES.glob("*.ipynb"):
        shutil.copy(example, workspace / example.name)
    pool = KernelPool(size=1, cwd=workspace, startup_timeout_s=60)
    yield pool
    await pool.close()


class Runs:
    """Jobs run as a worker runs them, with one report writer for all (a worker's)."""

    def __init__(self, workspace: Path, pool: KernelPool, out: Path) -> None:
        self.workspace, self.pool, self.out = workspace, pool, out
        self.reports = ReportWriter()
        self.stop = asyncio.Event()
        self.name = ""  # the last run's notebook, as its report is titled

    async def __call__(self, notebook: str, **kw: Any) -> Outcome:
        spec = RunSpec(
            job_id=1,
            notebook_path=self.workspace / notebook,
            kernel_name="python3",
            parameters=kw.pop("parameters", {}),
            report_path=self.out / "report.html",
            output_path=self.out / "executed.ipynb",
            interrupt_grace_s=2.0,
            **kw,
        )
        self.name = spec.notebook_path.stem
        return await run_job(spec, self.pool, self.reports, lambda kind, data: None, self.stop)

    def assert_report_is_the_plain_export(self) -> None:
        executed = nbformat.read(self.out / "executed.ipynb", as_version=4)
        report = (self.out / "report.html").read_text()
        assert report == plain(executed, self.name)
        assert f"<title>{html.escape(self.name)}</title>" in report  # the file's name, as nbconvert titles it


# The tour's steps take 5 s each by default (it is the README's live demo); its report is the same shape quicker.
QUICK = {"tour.ipynb": {"seconds_per_step": 0.2}}


@pytest.fixture
def runs(workspace: Path, pool: KernelPool, tmp_path: Path) -> Runs:
    return Runs(workspace, pool, tmp_path / "out")


@pytest.mark.kernel
@pytest.mark.parametrize(
    ("notebook", "state"),
    [
        ("hello.ipynb", JobState.SUCCEEDED),
        ("tour.ipynb", JobState.SUCCEEDED),
        ("plot.ipynb", JobState.SUCCEEDED),
        ("fails.ipynb", JobState.FAILED),
        ("many_cells.ipynb", JobState.SUCCEEDED),
        ("compat/display_outputs.ipynb", JobState.SUCCEEDED),
        ("compat/raises_in_cell_3.ipynb", JobState.FAILED),
        ("kill_self.ipynb", JobState.FAILED),
    ],
)
async def test_a_run_is_reported_as_the_plain_export_of_what_it_ran(runs: Runs, notebook: str, state: JobState) -> None:
    outcome = await runs(notebook, parameters=QUICK.get(notebook, {}))
    assert outcome.state is state and outcome.report_written
    runs.assert_report_is_the_plain_export()


@pytest.mark.kernel
async def test_two_runs_on_one_writer_are_each_the_plain_export(runs: Runs) -> None:
    # The second run starts with the kernel's language_info learnt from the first, and reuses its frame and the
    # inputs the first highlighted and cleaned (its parameters differ: that cell is highlighted anew).
    memory = runs.reports._memory
    for notebook, parameters in (
        ("hello.ipynb", {}),
        ("hello.ipynb", {"name": "again"}),
        ("tour.ipynb", QUICK["tour.ipynb"]),
    ):
        hits = memory.highlighted.hits, memory.cleaned.hits
        assert (await runs(notebook, parameters=parameters)).state is JobState.SUCCEEDED
        runs.assert_report_is_the_plain_export()
        if parameters == {"name": "again"}:
            assert memory.highlighted.hits > hits[0] and memory.cleaned.hits > hits[1]


@pytest.mark.kernel
async def test_a_display_updated_after_its_cell_ended(runs: Runs, workspace: Path) -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("h = display('first', display_id=True)"),
            nbformat.v4.new_markdown_cell("Between the display and its update."),
            nbformat.v4.new_code_cell("h.update('updated from a later cell')"),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, workspace / "update.ipynb")
    assert (await runs("update.ipynb")).state is JobState.SUCCEEDED
    assert "updated from a later cell" in (runs.out / "report.html").read_text()
    runs.assert_report_is_the_plain_export()


@pytest.mark.kernel
async def test_a_cancelled_run_is_reported_as_the_plain_export(runs: Runs) -> None:
    async def cancel_soon() -> None:
        await asyncio.sleep(1.5)
        runs.stop.set()

    canceller = asyncio.create_task(cancel_soon())
    outcome = await runs("sleep.ipynb")
    await canceller
    assert outcome.state is JobState.CANCELLED and outcome.report_written
    runs.assert_report_is_the_plain_export()


@pytest.mark.kernel
async def test_a_timed_out_cell_is_reported_as_the_plain_export(runs: Runs) -> None:
    outcome = await runs("compat/cell_timeout.ipynb", cell_timeout_s=1.0)
    assert outcome.state is JobState.TIMED_OUT and outcome.report_written
    runs.assert_report_is_the_plain_export()
