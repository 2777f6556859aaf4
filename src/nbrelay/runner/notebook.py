"""A notebook as nbclient takes it: read, older nbformat 4 minors upgraded as nbformat upgrades them, the metadata
nbclient does without completed, then validated; its kernel chosen as nbclient chooses it.

A refusal (`NotebookRefused`) names the field that is wrong and what would be accepted.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

import nbformat
from nbformat.corpus.words import generate_corpus_id
from nbformat.validator import ValidationError

from nbrelay.text import lone_surrogate, may_hold_surrogate, refusal

__all__ = ["DEFAULT_KERNEL", "NotebookRefused", "complete_kernelspec", "kernel_for", "parse", "runs"]

# What nbclient starts when the notebook names no kernel: jupyter_client's KernelManager default (its
# kernelspec.NATIVE_KERNEL_NAME, which tests/runner/test_notebook.py checks; not imported: jupyter_client is heavy
# for the server, which only reads notebooks).
DEFAULT_KERNEL = "python3"
SKIP_TAG = "skip-execution"  # nbclient's NotebookClient.skip_cells_with_tag


class NotebookRefused(ValueError):
    """The notebook cannot run: the message names the field and what would be accepted."""


class TooManyCells(NotebookRefused):
    """More cells than the reader was asked to take: refused before nbformat reads them (~50 us, ~2 KiB a cell)."""

    def __init__(self, cells: int, max_cells: int):
        super().__init__(f"{cells:,} cells; the limit is {max_cells:,}")
        self.cells = cells


def _where(path: Any) -> str:
    """A JSON path as people read it: metadata.kernelspec.name, cells[2].outputs[0]."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def _loaded(text: str | bytes, max_cells: int | None = None) -> nbformat.NotebookNode:
    try:
        data = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookRefused(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise NotebookRefused("not a notebook: JSON nested deeper than the parser goes") from None
    if not isinstance(data, dict):
        raise NotebookRefused("not a notebook: expected a JSON object with nbformat, metadata and cells")
    found = lone_surrogate(data) if may_hold_surrogate(text) else None
    if found is not None:  # no kernel message, report or executed notebook could hold it
        raise NotebookRefused(refusal(found))
    cells = data.get("cells")
    if max_cells is not None and isinstance(cells, list) and len(cells) > max_cells:
        raise TooManyCells(len(cells), max_cells)
    if not isinstance(data.get("metadata"), dict):
        raise NotebookRefused("metadata: expected an object (an empty one, {}, will do)")
    major = data.get("nbformat")
    if major not in (3, 4):
        raise NotebookRefused(f"nbformat is {major!r}; notebooks of nbformat 3 and 4 (any minor version) run here")
    if major == 4 and not isinstance(data.get("cells"), list):
        raise NotebookRefused("cells: expected a list of cells (an empty one, [], will do)")
    for i, cell in enumerate(data.get("cells") or []):
        if not isinstance(cell, dict):
            raise NotebookRefused(f"cells[{i}]: expected an object with cell_type, metadata and source")
        if cell.get("cell_type") not in ("code", "markdown", "raw"):
            raise NotebookRefused(f"cells[{i}]: cell_type is {cell.get('cell_type')!r}; expected code, markdown or raw")
        if not isinstance(cell.get("metadata"), dict):
            raise NotebookRefused(f"cells[{i}]: metadata: expected an object (an empty one, {{}}, will do)")
    try:
        # As nbformat.reads does, without parsing the JSON again: multi-line sources joined, then converted.
        nb = nbformat.converter.convert(nbformat.versions[major].to_notebook_json(data), 4)
    except (ValidationError, KeyError, AttributeError, TypeError, ValueError) as exc:
        message = str(getattr(exc, "message", None) or exc).splitlines()[0][:300]
        raise NotebookRefused(f"nbformat {major} could not be read: {message}") from None
    minor = nb.get("nbformat_minor")
    if not isinstance(minor, int):
        raise NotebookRefused(f"nbformat_minor is {minor!r}; expected an integer (0 to {nbformat.v4.nbformat_minor})")
    if minor < nbformat.v4.nbformat_minor:
        nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=minor)  # 4.0-4.4: cell ids, as nbformat does
    return nb


def _complete(nb: nbformat.NotebookNode) -> None:
    """Fill in what nbclient runs without: cell ids, a kernel's display name; drop a language_info without a name
    (nbclient replaces language_info with the kernel's own)."""
    seen: set[str] = set()
    for cell in nb.cells:
        if isinstance(cell, dict) and (not isinstance(cell.get("id"), str) or cell["id"] in seen):
            cell["id"] = generate_corpus_id()
        if isinstance(cell, dict):
            seen.add(cell["id"])
    metadata = nb.get("metadata")
    if not isinstance(metadata, dict):
        return
    kernelspec = metadata.get("kernelspec")
    if isinstance(kernelspec, dict) and "display_name" not in kernelspec:
        kernelspec["display_name"] = str(kernelspec.get("name") or kernelspec.get("language") or DEFAULT_KERNEL)
    language_info = metadata.get("language_info")
    if isinstance(language_info, dict) and "name" not in language_info:
        del metadata["language_info"]


@contextlib.contextmanager
def _named_for_validation(nb: nbformat.NotebookNode) -> Iterator[None]:
    """A kernelspec without `name` is valid for nbclient (its kernel is chosen for it): so for the schema too."""
    kernelspec = nb.get("metadata", {}).get("kernelspec")
    unnamed = isinstance(kernelspec, dict) and "name" not in kernelspec
    if unnamed:
        kernelspec["name"] = DEFAULT_KERNEL
    try:
        yield
    finally:
        if unnamed:
            del kernelspec["name"]


def parse(text: str | bytes, max_cells: int | None = None) -> nbformat.NotebookNode:
    """The notebook in `text`, upgraded to nbformat 4.5, completed and validated; raises NotebookRefused
    (TooManyCells past `max_cells`, counted before nbformat reads them)."""
    nb = _loaded(text, max_cells)
    _complete(nb)
    try:
        with _named_for_validation(nb):
            nbformat.validate(nb)
    except ValidationError as exc:
        where = _where(getattr(exc, "absolute_path", []))
        message = str(getattr(exc, "message", None) or exc).splitlines()[0][:300]
        raise NotebookRefused(f"{where}: {message} (nbformat {nb.nbformat}.{nb.nbformat_minor} schema)") from None
    return nb


def _language(nb: nbformat.NotebookNode) -> str | None:
    kernelspec = nb.metadata.get("kernelspec") or {}
    language = kernelspec.get("language") or (nb.metadata.get("language_info") or {}).get("name")
    return str(language) if language else None


def kernel_for(nb: nbformat.NotebookNode, installed: Mapping[str, str]) -> str:
    """The kernel to run `nb` with, as nbclient picks it: metadata.kernelspec.name; without one, the default kernel
    (python3). Where nbclient would start the default kernel for a notebook in another language, the installed
    kernel of that language is taken instead, and the notebook is refused when there is none.

    `installed` maps kernel names to their languages.
    """
    name = (nb.metadata.get("kernelspec") or {}).get("name")
    if name:
        return str(name)
    language = _language(nb)
    default_language = installed.get(DEFAULT_KERNEL)
    if language is None or default_language is None or language.lower() == default_language.lower():
        return DEFAULT_KERNEL
    for kernel, kernel_language in sorted(installed.items()):
        if kernel_language.lower() == language.lower():
            return kernel
    kernels = ", ".join(f"{k} ({v})" for k, v in sorted(installed.items())) or "none"
    raise NotebookRefused(
        f"metadata.kernelspec has no 'name' and no installed kernel runs its language {language!r}; installed "
        f"kernels: {kernels}. Name one in metadata.kernelspec.name, or choose kernel_name when you submit"
    )


def complete_kernelspec(nb: nbformat.NotebookNode, kernel_name: str) -> None:
    """Name the kernel that runs `nb` where its kernelspec does not, so the executed notebook is valid nbformat."""
    kernelspec = nb.metadata.get("kernelspec")
    if isinstance(kernelspec, dict) and not kernelspec.get("name"):
        kernelspec["name"] = kernel_name


_OUTPUT_FIELDS = {
    "stream": ("name", "text"),
    "display_data": ("metadata", "data"),
    "execute_result": ("metadata", "data", "execution_count"),
    "error": ("ename", "evalue", "traceback"),
}


def output_node(msg: dict[str, Any]) -> nbformat.NotebookNode:
    """A cell's output from the kernel's IOPub message, as nbformat's `output_from_msg` makes it but without checking
    each one against the notebook schema: that check was a third of a worker's time per display message (a cell
    that displays 20,000 values), and the kernel speaks the protocol. Raises ValueError for no output message."""
    msg_type = msg["header"]["msg_type"]
    fields = _OUTPUT_FIELDS.get(msg_type)
    if fields is None:
        raise ValueError(f"Unrecognized output msg type: {msg_type!r}")
    content = msg["content"]
    return nbformat.from_dict({"output_type": msg_type, **{name: content[name] for name in fields}})


def clear_outputs(nb: nbformat.NotebookNode) -> None:
    """Every code cell without the outputs and number of an earlier run, as papermill starts a run: a cell this
    run does not reach (after a failure or a stop, empty, skipped) shows nothing rather than what a run of last week
    left in the file."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None


def runs(cell: Any) -> bool:
    """Whether nbclient executes `cell`: a code cell with source, not tagged skip-execution. These cells are the
    ones numbered: the n-th of them is "cell n" everywhere, and In [n] in the report."""
    return bool(cell.cell_type == "code" and cell.source.strip() and SKIP_TAG not in cell.metadata.get("tags", []))
