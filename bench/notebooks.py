"""Notebooks the benchmarks run, generated on the fly (nothing here is timed)."""

from __future__ import annotations

from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
BIG200 = ROOT / "tests" / "notebooks" / "big200.ipynb"
TINY_NAME = "tiny.ipynb"


def tiny_notebook() -> nbformat.NotebookNode:
    """A parameterised two-cell notebook: `x = 1` tagged `parameters`, then `print(x + 1)`."""
    params = nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})
    body = nbformat.v4.new_code_cell("print(x + 1)")
    nb = nbformat.v4.new_notebook(cells=[params, body])
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def write_tiny(folder: Path, name: str = TINY_NAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(tiny_notebook(), path)
    return path
