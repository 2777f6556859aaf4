"""Reading a notebook from the workspace for a job: found, a notebook, valid, its kernel and its parameters.

Every way a notebook can be unusable becomes a clear 4xx here, before any job exists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbformat.validator import ValidationError

from nbrelay.errors import NotFound, PayloadTooLarge, Unprocessable
from nbrelay.files import Workspace
from nbrelay.models import Parameter
from nbrelay.runner.params import declared_parameters

MAX_NOTEBOOK_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class NotebookInfo:
    path: str  # relative to the workspace
    absolute: Path
    kernel_name: str
    language: str
    parameters: list[Parameter] | None  # None: the language does not let us read them


class KernelNames:
    """The installed kernel names, re-read when a name is not found (a kernel may be installed while we run)."""

    def __init__(self) -> None:
        self._names: set[str] = set()

    def known(self) -> set[str]:
        if not self._names:
            self._names = set(KernelSpecManager().find_kernel_specs())
        return self._names

    def check(self, name: str) -> None:
        if name in self.known():
            return
        self._names = set()
        if name not in self.known():
            raise Unprocessable(
                f"unknown kernel {name!r}; installed kernels: {', '.join(sorted(self.known())) or 'none'}",
                code="unknown_kernel",
            )


def read_notebook(workspace: Workspace, user_path: str, kernels: KernelNames) -> tuple[NotebookInfo, object]:
    """Resolve, read and validate the notebook at `user_path`; returns its info and the parsed notebook."""
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
    raw = absolute.read_bytes()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Unprocessable(f"{user_path} is not valid JSON: {exc}", code="invalid_notebook") from None
    try:
        nb = nbformat.reads(raw.decode(), as_version=4)
        nbformat.validate(nb)
    except (ValidationError, nbformat.reader.NotJSONError, KeyError, AttributeError, TypeError, ValueError) as exc:
        message = str(getattr(exc, "message", None) or exc).splitlines()[0][:300]
        raise Unprocessable(f"{user_path} is not a valid notebook: {message}", code="invalid_notebook") from None
    if not isinstance(data, dict):
        raise Unprocessable(f"{user_path} is not a valid notebook", code="invalid_notebook")
    kernelspec = nb.metadata.get("kernelspec") or {}
    kernel_name = str(kernelspec.get("name") or "python3")
    language = str(kernelspec.get("language") or nb.metadata.get("language_info", {}).get("name") or "python")
    info = NotebookInfo(
        path=workspace.relative(absolute),
        absolute=absolute,
        kernel_name=kernel_name,
        language=language,
        parameters=declared_parameters(nb),
    )
    return info, nb
