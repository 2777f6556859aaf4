"""The HTML report: one exporter per worker process, reused for every job (its set-up is the slow part).

Reports load nothing from elsewhere (templates/report.html.j2): math is written as MathML here (runner/mathml.py),
so a report reads the same offline, behind a firewall, or years later. A job's report is rendered cell by cell as it
runs (runner/report_pieces.py); `ReportExporter.plain_html` is the whole export those pieces are checked against.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import nbformat
from jinja2 import pass_context
from nbconvert import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

from nbrelay.runner import mathml
from nbrelay.runner.report_pieces import DEFAULT_NAME, ReportPieces, WorkerMemory

TEMPLATES = Path(__file__).parent / "templates"


class MathMLRenderer(IPythonRenderer):
    """nbconvert's Markdown renderer, with formulas written as MathML instead of left for MathJax."""

    def block_math(self, body: str) -> str:
        return mathml.to_mathml(body, display=True)

    def inline_math(self, body: str) -> str:
        return mathml.to_mathml(body, display=False)

    def latex_environment(self, name: str, body: str) -> str:
        return mathml.environment(name, body)


def image_alt(output: dict[str, Any]) -> str:
    """An image output's alternative text: its text form (matplotlib's "<Figure size … with 1 Axes>"), escaped."""
    text = str(output.get("data", {}).get("text/plain", "")).strip() or "image output"
    return html.escape(text, quote=True)


class ReportExporter(HTMLExporter):
    def __init__(self, **kw: Any) -> None:
        super().__init__(extra_template_paths=[str(TEMPLATES)], template_file="report.html.j2", **kw)
        self.register_filter("typeset_math", mathml.typeset)
        self.register_filter("image_alt", image_alt)

    @pass_context
    def markdown2html(self, context: Any, source: str) -> str:
        cell = context.get("cell", {})
        renderer = MathMLRenderer(
            escape=False,
            attachments=cell.get("attachments", {}),
            embed_images=self.embed_images,
            path=context.get("resources", {}).get("metadata", {}).get("path", ""),
            anchor_link_text=self.anchor_link_text,
            exclude_anchor_links=self.exclude_anchor_links,
            **self.lexer_options,
        )
        return str(MarkdownWithMath(renderer=renderer).render(source))

    def template_resources(self, resources: dict[str, Any]) -> dict[str, Any]:
        """What TemplateExporter.from_notebook_node adds to the resources before it renders (nbconvert 7.17)."""
        return {
            "raw_mimetypes": resources.get("raw_mimetypes", self.raw_mimetypes),
            "output_mimetype": resources.get("output_mimetype", self.output_mimetype),
            "global_content_filter": {
                "include_code": not self.exclude_code_cell,
                "include_markdown": not self.exclude_markdown,
                "include_raw": not self.exclude_raw,
                "include_unknown": not self.exclude_unknown,
                "include_input": not self.exclude_input,
                "include_output": not self.exclude_output,
                "include_output_stdin": not self.exclude_output_stdin,
                "include_input_prompt": not self.exclude_input_prompt,
                "include_output_prompt": not self.exclude_output_prompt,
                "no_prompt": self.exclude_input_prompt and self.exclude_output_prompt,
            },
        }

    def plain_html(self, nb: nbformat.NotebookNode, name: str = DEFAULT_NAME) -> str:
        """The whole notebook exported at once, as nbconvert does it; `name` is its title (the file's, without
        .ipynb, as `jupyter nbconvert` gives it)."""
        body, _resources = self.from_notebook_node(nb, {"metadata": {"name": name}})
        return str(body)


class ReportWriter:
    """A worker process's exporter, and what its jobs taught it: the kernels' language_info (so that inputs are
    highlighted with the kernel's lexer before the kernel says it) and what its reports share (WorkerMemory)."""

    def __init__(self) -> None:
        self._exporter: ReportExporter | None = None
        self._language_info: dict[str, Any] = {}  # kernel name -> the language_info its last run reported
        self._memory = WorkerMemory()

    @property
    def exporter(self) -> ReportExporter:
        if self._exporter is None:
            self._exporter = ReportExporter()
        return self._exporter

    def to_html(self, nb: nbformat.NotebookNode, name: str = DEFAULT_NAME) -> str:
        """The plain export of `nb` (what a job's report equals)."""
        return self.exporter.plain_html(nb, name)

    def pieces(
        self, nb: nbformat.NotebookNode, kernel_name: str | None = None, name: str = DEFAULT_NAME
    ) -> ReportPieces:
        """Start rendering the report of `nb`, which is about to run on `kernel_name` (None: `nb` will not run).
        Inputs are highlighted with the lexer the kernel gave the last run here; on a kernel not seen yet, rendering
        waits for the run's own metadata rather than highlight everything twice."""
        metadata: nbformat.NotebookNode | None = nb.metadata
        if kernel_name is not None:
            known = self._language_info.get(kernel_name)
            metadata = None if known is None else nbformat.NotebookNode({**nb.metadata, "language_info": known})
        return ReportPieces(self.exporter, nb, metadata=metadata, memory=self._memory, name=name)

    def learn(self, nb: nbformat.NotebookNode, kernel_name: str | None) -> None:
        """Remember the language_info the kernel gave `nb` when it ran."""
        if kernel_name and "language_info" in nb.metadata:
            self._language_info[kernel_name] = nb.metadata.language_info

    def write(self, nb: nbformat.NotebookNode, *, html_path: Path, ipynb_path: Path, name: str = DEFAULT_NAME) -> None:
        """Write the notebook and its HTML report, each atomically, rendered as a job's report is (blocking)."""
        self.pieces(nb, name=name).write(html_path=html_path, ipynb_path=ipynb_path).result()
