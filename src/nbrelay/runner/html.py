"""The HTML report: one HTMLExporter per worker process, reused for every job (its set-up is the slow part)."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

from nbrelay.files import atomic_write


class ReportWriter:
    def __init__(self) -> None:
        self._exporter: HTMLExporter | None = None

    @property
    def exporter(self) -> HTMLExporter:
        if self._exporter is None:
            self._exporter = HTMLExporter()
        return self._exporter

    def to_html(self, nb: nbformat.NotebookNode) -> str:
        body, _resources = self.exporter.from_notebook_node(nb)
        return str(body)

    def write(self, nb: nbformat.NotebookNode, *, html_path: Path, ipynb_path: Path) -> None:
        """Write the executed notebook and its HTML report, each atomically."""
        atomic_write(ipynb_path, nbformat.writes(nb).encode())
        atomic_write(html_path, self.to_html(nb).encode())
