"""Reading a notebook from the workspace for a job: found, a notebook, valid, its kernel and its parameters.

Every way a notebook can be unusable becomes a clear 4xx here, before any job exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nbrelay.config import Settings
from nbrelay.errors import NotFound, PayloadTooLarge, Unprocessable
from nbrelay.files import Workspace, read_regular
from nbrelay.models import Parameter
from nbrelay.runner.notebook import NotebookRefused, TooManyCells, kernel_for, parse
from nbrelay.runner.params import declared_parameters, language_of

if TYPE_CHECKING:
    from nbformat import NotebookNode

MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_CELLS: int = Settings.model_fields["max_notebook_cells"].default


def checked(data: bytes, name: str, max_cells: int) -> NotebookNode:
    """The notebook in `data` as a job reads it (runner/notebook.parse), or the 422 that says why not: more than
    `max_cells` cells (too_many_cells, counted before nbformat reads them: ~50 us and ~2 KiB a cell), or not a
    valid notebook (invalid_notebook, naming the field). The same for an upload and a submission."""
    _count_keys(data, name, max_cells)  # the parsed list is counted by parse, before nbformat reads it
    try:
        return parse(data, max_cells)
    except TooManyCells as exc:
        raise _too_many(name, exc.cells, max_cells) from None
    except NotebookRefused as exc:
        raise Unprocessable(f"{name} is not a valid notebook: {exc}", code="invalid_notebook") from None


def _count_keys(data: bytes, name: str, max_cells: int) -> None:
    """A first, parse-free count: the "cell_type" keys as writers put them down (a million cells are refused in
    milliseconds); keys written with escapes, or missing, are counted in the parsed list."""
    cells = data.count(b'"cell_type"')
    if cells > max_cells:
        raise _too_many(name, cells, max_cells)


def _too_many(name: str, cells: int, max_cells: int) -> Unprocessable:
    return Unprocessable(
        f"{name} has {cells:,} cells; the limit is {max_cells:,}",
        code="too_many_cells",
        hint="NBRELAY_MAX_NOTEBOOK_CELLS sets the limit",
    )


@dataclass(frozen=True)
class NotebookInfo:
    path: str  # relative to the workspace
    absolute: Path
    kernel_name: str
    language: str
    parameters: list[Parameter] | None  # None: the language does not let us read them


class KernelNames:
    """The installed kernels and their languages, re-read when a name is not found (a kernel may be installed while
    we run)."""

    def __init__(self) -> None:
        self._languages: dict[str, str] = {}

    def languages(self) -> dict[str, str]:
        """Installed kernel name -> its language."""
        if not self._languages:
            from jupyter_client.kernelspec import KernelSpecManager  # on first use: a slow import for a server start

            specs = KernelSpecManager().get_all_specs()
            self._languages = {name: str(found["spec"].get("language") or "") for name, found in specs.items()}
        return self._languages

    def known(self) -> set[str]:
        return set(self.languages())

    def installed(self, name: str) -> bool:
        """Whether kernel `name` is installed (read again when it was not: it may have been installed since)."""
        if name in self.known():
            return True
        self._languages = {}
        return name in self.known()

    def check(self, name: str) -> None:
        if not self.installed(name):
            raise Unprocessable(
                f"unknown kernel {name!r}; installed kernels: {', '.join(sorted(self.known())) or 'none'}",
                code="unknown_kernel",
            )


def read_notebook(
    workspace: Workspace,
    user_path: str,
    kernels: KernelNames,
    kernel_name: str | None = None,
    *,
    max_cells: int = DEFAULT_MAX_CELLS,
) -> tuple[NotebookInfo, object]:
    """Resolve, read and validate the notebook at `user_path` as nbclient would run it; returns its info and the
    parsed notebook. `kernel_name` is the kernel asked for, if any; else the notebook's (runner/notebook.py)."""
    absolute = workspace.resolve(user_path)
    if not absolute.exists():
        raise NotFound(f"no notebook at {user_path}", code="notebook_not_found")
    if absolute.is_dir():
        raise Unprocessable(f"{user_path} is a folder, not a notebook", code="not_a_notebook")
    if absolute.suffix != ".ipynb":
        raise Unprocessable(f"{user_path} is not a notebook", code="not_a_notebook", hint="notebooks end in .ipynb")
    size = absolute.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        raise PayloadTooLarge(f"{user_path} is {size} bytes; the limit is {MAX_NOTEBOOK_BYTES}")
    nb = checked(read_regular(absolute, user_path), user_path, max_cells)
    try:
        chosen = kernel_name or kernel_for(nb, kernels.languages())
    except NotebookRefused as exc:
        raise Unprocessable(f"{user_path}: {exc}", code="unknown_kernel") from None
    info = NotebookInfo(
        path=workspace.relative(absolute),
        absolute=absolute,
        kernel_name=chosen,
        language=language_of(nb),
        parameters=declared_parameters(nb),
    )
    return info, nb
