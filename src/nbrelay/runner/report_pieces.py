"""The HTML report built while its job runs, so that writing it at the end is a join of pieces already rendered.

Each cell's piece is what the report exporter (runner/html.py) writes for that cell: when the job starts, the
inputs of the cells that will run are highlighted and the other cells rendered; a code cell is rendered when its
outputs are final. The frame is the document with a
marker where each cell goes. Pieces and frame each get the pass nbconvert makes over the whole document
(BeautifulSoup: alt text on images, tabindex on input and output areas), so their join is the plain export byte for
byte (tests/runner/test_report_pieces.py). Where it would not be, the report is the plain export: a cell whose HTML
closes what it did not open, or leaves open what it opened, reshapes its neighbours in the whole document.

All rendering for a job happens on one thread of its own, in order: what was queued while cells ran is done before
the report is joined. The event loop only copies a finished cell (cheap: strings are shared, not copied).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import secrets
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nbformat
from bs4 import BeautifulSoup
from bs4.element import Comment, Tag
from nbconvert.exporters.exporter import Exporter
from nbconvert.filters.highlight import Highlight2HTML
from nbconvert.filters.widgetsdatatypefilter import WidgetsDataTypeFilter
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor

from nbrelay.files import atomic_write
from nbrelay.runner.notebook import runs
from nbrelay.runner.render_cache import RenderCache

if TYPE_CHECKING:
    from nbrelay.runner.html import ReportExporter

__all__ = ["MARKER", "Frames", "ReportPieces", "WorkerMemory", "piece_html"]

log = logging.getLogger(__name__)
DEFAULT_NAME = "Notebook"  # nbconvert's title for a notebook it was given without a file name

MARKER = "<!--nbrelay-cell-->"  # where a cell goes in the frame (templates/report_frame.html.j2)
CELLS_TEMPLATE = "report_cells.html.j2"
FRAME_TEMPLATE = "report_frame.html.j2"
_SENTINEL = "nbrelay-piece"
_PIECE_END = f"nbrelay-piece-end-{secrets.token_hex(8)}"  # no HTML can guess it
_NO_ALT = "No description has been provided for this image"  # nbconvert's words for an image without alt text
_FRAMES_KEPT = 8

Frames = dict[Hashable, list[str] | None]  # a worker's last frames: (metadata, cells, version) -> parts or None
# An input's cleaned HTML, and the span of it that had the whole-document pass alone (start, end, its HTML after the
# pass), or None when it cannot have it alone.
Cleaned = tuple[str, tuple[int, int, str] | None]


@dataclass
class WorkerMemory:
    """What a worker's reports share across its jobs (the exporter is the same for all of them): the last frames,
    a highlighter per lexer, and the answers of the pure filters on inputs (runner/render_cache.py)."""

    frames: Frames = field(default_factory=dict)
    highlighters: dict[str | None, Highlight2HTML] = field(default_factory=dict)
    highlighted: RenderCache[str] = field(default_factory=lambda: RenderCache(len))
    cleaned: RenderCache[Cleaned] = field(default_factory=lambda: RenderCache(lambda answer: 2 * len(answer[0])))


class _Fragment(BeautifulSoup):
    """HTML parsed as html.parser parses it inside the whole document, noting whether it would reach outside itself
    there: an end tag that closes nothing of its own (in the document it closes an enclosing element), or an element,
    comment or script left open (it would take in what follows)."""

    def __init__(self, markup: str) -> None:
        self.spills = False
        self.closed = False
        super().__init__(f"<{_SENTINEL}>{markup}</{_SENTINEL}>", features="html.parser")
        self.spills = self.spills or not self.closed

    def handle_endtag(self, name: str, nsprefix: str | None = None) -> None:
        if name == _SENTINEL and not self.closed:
            self.closed = True
            self.spills = self.spills or self.currentTag is None or self.currentTag.name != _SENTINEL
        elif not any(tag.name == name for tag in self.tagStack[2:]):
            self.spills = True
        super().handle_endtag(name, nsprefix)


def piece_html(rendered: str) -> tuple[str, int] | None:
    """HTML of one cell (or part of one) after nbconvert's whole-document pass, and how many images had no alt
    text; None when it would not stay inside its cell in the whole document (`pieces_html` of one)."""
    found = pieces_html(f"{rendered}<!--{_PIECE_END}-->", _PIECE_END, 1)
    return found[0] if found is not None else None


def pieces_html(rendered: str, end: str, count: int) -> list[tuple[str, int]] | None:
    """`count` cells' rendered HTML, each followed by the comment `<!--end-->`, after nbconvert's whole-document pass,
    as (HTML, images without alt text) per cell; None when a cell's HTML would not stay inside the cell."""
    soup = _Fragment(rendered)
    if soup.spills:
        return None
    root = soup.contents[0]
    assert isinstance(root, Tag)
    missing = [0] * (count + 1)
    cell = 0
    for node in root.contents:
        if isinstance(node, Comment) and str(node) == end:
            cell += 1
        elif isinstance(node, Tag) and cell < count:
            missing[cell] += _touch_up_node(node)
    parts = root.decode_contents().split(f"<!--{end}-->")
    if cell != count or len(parts) != count + 1 or parts[-1]:
        return None  # an end marker inside a cell's element: a cell's HTML reached into the next
    return list(zip(parts[:-1], missing[:-1], strict=True))


def _touch_up_node(node: Tag) -> int:
    """`_touch_up` for a node inside the notebook's body, by name and class: the selectors' matches, found faster."""
    missing = 0
    for img in [node, *node.find_all("img")] if node.name == "img" else node.find_all("img"):
        if "alt" not in img.attrs:
            img.attrs["alt"] = _NO_ALT
            missing += 1
    for div in [node, *node.find_all("div")] if node.name == "div" else node.find_all("div"):
        classes = div.get("class") or ()
        if "jp-Cell-inputWrapper" in classes or "jp-OutputArea-output" in classes:
            div.attrs["tabindex"] = "0"
    return missing


def _touch_up(root: Tag, scope: str) -> int:
    """What nbconvert's HTMLExporter.from_notebook_node does to the parsed document; images without alt counted."""
    images = root.select("img:not([alt])")
    for elem in images:
        elem.attrs["alt"] = _NO_ALT
    for elem in root.select(f"{scope}div.jp-Cell-inputWrapper"):
        elem.attrs["tabindex"] = "0"
    for elem in root.select(f"{scope}div.jp-OutputArea-output"):
        elem.attrs["tabindex"] = "0"
    return len(images)


def frame_parts(rendered: str, cells: int) -> list[str] | None:
    """The frame after nbconvert's whole-document pass, split where the cells go; None unless it has exactly one
    marker per cell, each inside the notebook's body."""
    if rendered.count(MARKER) != cells:
        return None
    soup = BeautifulSoup(rendered, features="html.parser")
    markers = soup.find_all(string=lambda text: isinstance(text, Comment) and f"<!--{text}-->" == MARKER)
    if len(markers) != cells or any(marker.find_parent(class_="jp-Notebook") is None for marker in markers):
        return None
    _touch_up(soup, ".jp-Notebook ")
    parts = str(soup).split(MARKER)
    return parts if len(parts) == cells + 1 else None


def _joins_cleanly(parts: list[str]) -> bool:
    """Whether parts that had the whole-document pass alone join into what the pass writes for them together: no
    text may run across a join (the pass writes a text of blanks alone as one blank). Parts are written HTML, so a
    part that ends with '>' ends with a tag or comment, and one that begins with '<' begins with one."""
    return all(left.endswith(">") or right.startswith("<") for left, right in pairwise(parts))


class _Memo:
    """A pure filter with its answers kept for one job: an input highlighted and cleaned when the job started is
    not highlighted again when its cell ends."""

    def __init__(self, fn: Callable[..., str], key: Callable[..., Hashable]) -> None:
        self.fn = fn
        self.key = key
        self.answers: dict[Hashable, str] = {}

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        key = self.key(*args, **kwargs)
        answer = self.answers.get(key)
        if answer is None:
            answer = self.answers[key] = self.fn(*args, **kwargs)
        return answer


def _highlight_key(source: str, language: str | None = None, metadata: Any = None) -> Hashable:
    magics = metadata.get("magics_language") if metadata else None  # all of the metadata Pygments is told
    return source, language, magics


def _same_cell(cell: Any, seen: Any) -> bool:
    """Whether `cell` renders as `seen` did: equal but for the run's timing metadata, which no template shows."""
    if cell.keys() != seen.keys():
        return False
    for key, value in cell.items():
        if key == "metadata":
            if {k: v for k, v in value.items() if k != "execution"} != {
                k: v for k, v in seen[key].items() if k != "execution"
            }:
                return False
        elif value != seen[key]:
            return False
    return True


class ReportPieces:
    """One job's report, rendered as the job runs: `cell_done` when a cell's outputs are final, `write` at the end.

    `nb` is the job's notebook, which nbclient changes as it runs; this object only reads it on the event loop
    (copies go to the rendering thread). `metadata` is the notebook metadata to render with at once, until the run
    is known to differ (the kernel's language_info arrives when the run starts): call `metadata_known` then. Without
    it, nothing is rendered before `metadata_known`.
    """

    def __init__(
        self,
        exporter: ReportExporter,
        nb: nbformat.NotebookNode,
        *,
        metadata: nbformat.NotebookNode | None = None,
        memory: WorkerMemory | None = None,
        name: str = DEFAULT_NAME,
    ) -> None:
        self.exporter = exporter
        self.nb = nb
        self.name = name
        self._pieces: list[str | None] = [None] * len(nb.cells)
        self._seen: list[tuple[Any, Any] | None] = [None] * len(nb.cells)  # (cell, metadata) each piece shows
        self._spills: set[int] = set()  # cells whose HTML would reach outside them in the whole document
        self._missing_alt = [0] * len(nb.cells)
        self._memory = memory if memory is not None else WorkerMemory()
        self._frames = self._memory.frames
        self._highlighters: dict[str | None, _Memo] = {}
        self._clean_html = self._filter("clean_html")
        self._clean = _Memo(self._cleaned, lambda html: html)
        self._fragments: list[str] = []  # cleaned HTML after the whole-document pass, stood in for by a comment
        self._ended: deque[tuple[int, Any, Any]] = deque()  # (index, cell, metadata) of cells ended, to render
        self._cell_end = f"nbrelay-cell-end-{secrets.token_hex(8)}"  # the comment after each cell's piece
        self._stand_in = re.compile(f"<!--nbrelay-{secrets.token_hex(8)}-(\\d+)-->")  # no cell can guess it
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="report")
        self._metadata: Any = None
        if metadata is not None:
            self._metadata = copy.deepcopy(metadata)
            self._start(self._metadata)

    # on the event loop ---------------------------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._thread.submit(fn, *args)

    def _start(self, metadata: Any) -> None:
        """With `metadata`: highlight the inputs of the cells that will run (rendered when they end), render the
        cells that will not (markdown, raw, skipped: final now), then the frame."""
        cells = self.nb.cells
        running = [i for i, cell in enumerate(cells) if runs(cell)]
        final = [i for i, cell in enumerate(cells) if not runs(cell)]
        self.submit(self._highlight, [(cells[i].source, copy.deepcopy(cells[i].metadata)) for i in running], metadata)
        self.submit(self._render, final, self._snapshot(final), metadata)
        self.submit(self._frame, metadata)

    def _snapshot(self, indices: list[int] | None = None) -> list[Any]:
        cells = self.nb.cells
        return [copy.deepcopy(cells[i]) for i in (range(len(cells)) if indices is None else indices)]

    def metadata_known(self) -> None:
        """The run's metadata is final (nbclient set the kernel's language_info): render everything again with it
        if it is not what the pieces were rendered with."""
        if self.nb.metadata == self._metadata:
            return
        self._metadata = copy.deepcopy(self.nb.metadata)
        self._start(self._metadata)

    def cell_done(self, index: int) -> None:
        """Cell `index` has its final outputs: render its piece."""
        same = self._metadata is not None and self.nb.metadata == self._metadata
        metadata = self._metadata if same else copy.deepcopy(self.nb.metadata)
        self._ended.append((index, self._snapshot([index])[0], metadata))
        self.submit(self._render_ended)

    def prepend(self, cell: nbformat.NotebookNode) -> None:
        """Put `cell` before the notebook's first (the run is over: no cell is rendered by its place any more).
        Done on the rendering thread, after the pieces queued before, which were rendered by the old places."""
        self.submit(self._prepend, cell)

    def write(self, *, html_path: Path, ipynb_path: Path, still_ours: Callable[[], bool] | None = None) -> Future[bool]:
        """Write the executed notebook and its report (each atomically) once the pieces queued before are
        rendered; whether they were. The notebook must not change any more: the run is over. The rendering
        thread ends with it. `still_ours`: asked just before the files are written (a job on a lease)."""
        future = self.submit(self._write, html_path, ipynb_path, still_ours)
        self._thread.shutdown(wait=False)
        return future

    def close(self) -> None:
        """Stop rendering (the job ended without a report to write)."""
        self._thread.shutdown(wait=False, cancel_futures=True)

    # on the rendering thread ---------------------------------------------------------------------------------
    def _prepend(self, cell: nbformat.NotebookNode) -> None:
        self.nb.cells.insert(0, cell)
        self._pieces.insert(0, None)
        self._seen.insert(0, None)
        self._missing_alt.insert(0, 0)
        self._spills = {index + 1 for index in self._spills}

    def _write(self, html_path: Path, ipynb_path: Path, still_ours: Callable[[], bool] | None = None) -> bool:
        html = self.assemble(self.nb)
        if still_ours is not None and not still_ours():
            return False
        atomic_write(ipynb_path, nbformat.writes(self.nb).encode())
        atomic_write(html_path, html.encode())
        return True

    def assemble(self, nb: nbformat.NotebookNode) -> str:
        """The report of `nb` (the run's notebook as it ended): pieces still current are reused, the others
        rendered now, and all of it joined into the frame."""
        if len(nb.cells) != len(self._pieces):
            raise ValueError(f"the notebook has {len(nb.cells)} cells, its report pieces {len(self._pieces)}")
        stale = [
            i
            for i, (cell, seen) in enumerate(zip(nb.cells, self._seen, strict=True))
            if seen is None or seen[1] != nb.metadata or not _same_cell(cell, seen[0])
        ]
        if stale:
            self._render(stale, [nb.cells[i] for i in stale], nb.metadata)
        parts = self._frame(nb.metadata)
        if parts is None or self._spills:
            why = "its frame" if parts is None else f"the HTML of cell {min(self._spills)} reaches outside the cell"
            log.info("report written by the plain export: %s", why)
            return self.exporter.plain_html(nb, self.name)
        out = [parts[0]]
        for piece, after in zip(self._pieces, parts[1:], strict=True):
            out += [piece or "", after]
        if not _joins_cleanly([part for part in out if part]):
            log.info("report written by the plain export: a text runs from one cell into the next")
            return self.exporter.plain_html(nb, self.name)
        missing = sum(self._missing_alt)
        if missing:
            log.warning("Alternative text is missing on %s image(s).", missing)
        return "".join(out)

    def _frame(self, metadata: Any) -> list[str] | None:
        """The frame of this notebook with `metadata`: it depends on the number of cells, not on what they hold."""
        nb, cells = self.nb, len(self._pieces)
        key = (json.dumps(metadata, sort_keys=True, default=str), cells, nb.nbformat, nb.nbformat_minor, self.name)
        if key not in self._frames:
            placeholders = [nbformat.v4.new_raw_cell() for _ in range(cells)]
            shell = nbformat.NotebookNode(
                nbformat=nb.nbformat, nbformat_minor=nb.nbformat_minor, metadata=metadata, cells=placeholders
            )
            # as nbconvert prepares it, with the notebook's name for the title
            nb_copy, resources = Exporter.from_notebook_node(self.exporter, shell, {"metadata": {"name": self.name}})
            rendered = self._template_html(FRAME_TEMPLATE, nb_copy, resources).lstrip("\r\n")
            if len(self._frames) >= _FRAMES_KEPT:
                self._frames.pop(next(iter(self._frames)))
            self._frames[key] = frame_parts(rendered, cells)
        return self._frames[key]

    def _highlight(self, inputs: list[tuple[str, Any]], metadata: Any) -> None:
        """Highlight and clean inputs as the template will when their cells are rendered (the most of a code
        cell's cost); remembered for the job. A cell whose preprocessed metadata differs is highlighted then."""
        highlight = self._highlighter(metadata)
        for source, cell_metadata in inputs:
            self._clean(highlight(source, metadata=cell_metadata))

    def _cleaned(self, html: str) -> str:
        """The clean_html filter for this job's pieces: the cleaned HTML goes through the whole-document pass once,
        here, and the piece holds a comment in its place until the piece has had that pass (a highlighted input is
        most of a code cell's tags, and the cell is rendered again when it ends)."""
        cleaned, core = self._memory.cleaned.get(html, lambda: self._clean_alone(html))
        if core is None:
            return cleaned
        start, end, fragment = core
        self._fragments.append(fragment)
        token = self._stand_in.pattern.replace("(\\d+)", str(len(self._fragments) - 1))
        return cleaned[:start] + token + cleaned[end:]

    def _clean_alone(self, html: str) -> Cleaned:
        """`html` cleaned, and the part of it that can have the whole-document pass alone: from its first tag to its
        last. Text at either end stays in the piece, where it may join the text around it (BeautifulSoup writes a
        text of blanks alone as one blank, so where a text ends matters)."""
        cleaned = str(self._clean_html(html))
        start, end = cleaned.find("<"), cleaned.rfind(">") + 1
        if start < 0 or end <= start:
            return cleaned, None
        fragment = piece_html(cleaned[start:end])
        # Images without alt text stay in the piece, which counts them; a core that does not begin and end with a
        # tag (a '<' read as text) would join the text around it.
        if fragment is None or fragment[1] or not (fragment[0].startswith("<") and fragment[0].endswith(">")):
            return cleaned, None
        return cleaned, (start, end, fragment[0])

    def _render_ended(self) -> None:
        """The cells that ended since this thread last looked, rendered together (with the metadata each ended
        with): when the thread falls behind short cells, it catches up in fewer, larger renders."""
        ended: list[tuple[int, Any, Any]] = []
        while self._ended:
            ended.append(self._ended.popleft())
        for _, group in groupby(ended, key=lambda item: id(item[2])):
            items = list(group)
            self._render([index for index, _, _ in items], [cell for _, cell, _ in items], items[0][2])

    def _render(self, indices: list[int], cells: list[Any], metadata: Any) -> None:
        """The pieces of `cells` (cells `indices` as they are now) with `metadata`: one template render and one
        whole-document pass for all of them, split at the comment after each cell; one by one if one spills."""
        nb = self.nb
        kept: list[tuple[int, Any]] = []
        batch: list[Any] = []
        prepared: tuple[nbformat.NotebookNode, dict[str, Any]] | None = None
        for index, cell in zip(indices, cells, strict=True):
            one = nbformat.NotebookNode(
                nbformat=nb.nbformat, nbformat_minor=nb.nbformat_minor, metadata=metadata, cells=[cell]
            )
            prepared = self._preprocess(one)
            if prepared[0].cells:
                kept.append((index, cell))
                batch.extend(prepared[0].cells)
            else:  # a preprocessor removed it (tags to remove): not in the document either
                self._keep(index, cell, metadata, ("", 0))
        if prepared is None or not kept:
            return
        nb_copy, resources = prepared
        nb_copy.cells = batch
        resources["nbrelay_cell_end"] = self._cell_end
        pieces = pieces_html(self._template_html(CELLS_TEMPLATE, nb_copy, resources), self._cell_end, len(kept))
        if pieces is not None:
            for (index, cell), piece in zip(kept, pieces, strict=True):
                self._keep(index, cell, metadata, piece)
        elif len(kept) > 1:
            for index, cell in kept:
                self._render([index], [cell], metadata)
        else:
            self._keep(index=kept[0][0], cell=kept[0][1], metadata=metadata, piece=None)

    def _keep(self, index: int, cell: Any, metadata: Any, piece: tuple[str, int] | None) -> None:
        """Cell `index`'s piece, rendered from `cell` with `metadata` (None: its HTML spills)."""
        if piece is None:
            self._spills.add(index)
            self._pieces[index], self._missing_alt[index] = None, 0
        else:
            self._spills.discard(index)
            html, self._missing_alt[index] = piece
            self._pieces[index] = self._stand_in.sub(lambda m: self._fragments[int(m[1])], html)
        self._seen[index] = (cell, metadata)

    def _preprocess(self, one: nbformat.NotebookNode) -> tuple[nbformat.NotebookNode, dict[str, Any]]:
        """A one-cell notebook as Exporter.from_notebook_node prepares a notebook, but for what only concerns the
        whole document: the Pygments style sheet (CSSHTMLHeaderPreprocessor, the frame's), and the schema's
        normalisation and checks (the notebook was checked when it was read, and what nbclient adds is valid)."""
        exporter = self.exporter
        resources = exporter._init_resources(None)
        if "language" in one.metadata:
            resources["language"] = one.metadata["language"].lower()
        nb_copy = copy.deepcopy(one)  # `one` is kept to compare with later; preprocessors change what they get
        for preprocessor in exporter._preprocessors:
            if not isinstance(preprocessor, CSSHTMLHeaderPreprocessor):
                nb_copy, resources = preprocessor(nb_copy, resources)
        name = resources.get("metadata", {}).get("name", "")
        exporter._nb_metadata[os.path.join(resources.get("metadata", {}).get("path", ""), name)] = nb_copy.metadata
        return nb_copy, resources

    def _template_html(self, template_name: str, nb_copy: nbformat.NotebookNode, resources: dict[str, Any]) -> str:
        """What HTMLExporter.from_notebook_node renders for a prepared notebook before its BeautifulSoup pass, with
        the template `template_name` and this job's remembered highlighting."""
        exporter = self.exporter
        env = exporter.environment
        resources.update(exporter.template_resources(resources))
        saved = {name: env.filters.get(name) for name in ("highlight_code", "clean_html", "filter_data_type")}
        env.filters["highlight_code"] = self._highlighter(nb_copy.metadata)
        env.filters["clean_html"] = self._clean
        env.filters["filter_data_type"] = WidgetsDataTypeFilter(
            notebook_metadata=exporter._nb_metadata, parent=exporter, resources=resources
        )
        try:
            return str(env.get_template(template_name).render(nb=nb_copy, resources=resources))
        finally:
            for name, fn in saved.items():
                if fn is None:
                    env.filters.pop(name, None)
                else:
                    env.filters[name] = fn

    def _highlighter(self, metadata: Any) -> _Memo:
        """The highlight_code filter for this job's lexer: the worker's answers for the same input first."""
        langinfo = metadata.get("language_info", {})
        lexer = langinfo.get("pygments_lexer", langinfo.get("name", None))
        memo = self._highlighters.get(lexer)
        if memo is None:
            memory = self._memory
            highlight = memory.highlighters.get(lexer)
            if highlight is None:
                highlight = memory.highlighters[lexer] = Highlight2HTML(pygments_lexer=lexer, parent=self.exporter)

            def highlighted(source: str, language: str | None = None, metadata: Any = None) -> str:
                key = (lexer, _highlight_key(source, language, metadata))
                return memory.highlighted.get(key, lambda: highlight(source, language=language, metadata=metadata))

            memo = self._highlighters[lexer] = _Memo(highlighted, _highlight_key)
        return memo

    def _filter(self, name: str) -> Callable[..., str]:
        fn: Callable[..., str] = self.exporter.environment.filters[name]
        return fn
