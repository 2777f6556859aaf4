"""Notebook parameters: read what a notebook declares (papermill's translators) and check a request against it."""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from typing import Any

import nbformat

from nbrelay.errors import Unprocessable
from nbrelay.models import Parameter, type_kind
from nbrelay.runner.param_cell import read_python_cell

__all__ = ["check_parameters", "declared_parameters", "default_value", "inject_parameters", "language_of"]


def language_of(nb: nbformat.NotebookNode) -> str:
    kernelspec = nb.metadata.get("kernelspec", {})
    return str(kernelspec.get("language") or nb.metadata.get("language_info", {}).get("name") or "python")


def _ensure_tags(nb: nbformat.NotebookNode) -> None:
    # papermill reads `cell.metadata.tags` unguarded (its own loader adds the key): give every cell one.
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])


def declared_parameters(nb: nbformat.NotebookNode) -> list[Parameter] | None:
    """The parameters the notebook declares; [] without a `parameters` cell; None when its language can't tell."""
    # papermill is imported when first needed (here and in inject_parameters): a slow import for a server start.
    from papermill.translators import PythonTranslator, papermill_translators
    from papermill.utils import find_first_tagged_cell_index

    _ensure_tags(nb)
    index = find_first_tagged_cell_index(nb, "parameters")
    if index < 0:
        return []
    kernel_name = nb.metadata.get("kernelspec", {}).get("name")
    try:
        translator = papermill_translators.find_translator(kernel_name, language_of(nb))
        read = read_python_cell(nb.cells[index].source) if issubclass(translator, PythonTranslator) else None
        if read is None:
            read = [(p.name, p.inferred_type_name, p.default, p.help) for p in translator.inspect(nb.cells[index])]
    except (NotImplementedError, Exception):  # papermill raises a plain error for unknown languages
        return None
    return [
        Parameter(str(name), _type_of(str(declared), str(default)), str(default), str(help or ""))
        for name, declared, default, help in read
    ]


_NO_LITERAL = object()
# The type a parameter without a declared type takes from its literal default; None and other values: any value.
_LITERAL_TYPES = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict", tuple: "tuple"}


def _literal(source: str) -> Any:
    try:
        return ast.literal_eval(source)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NO_LITERAL


def _type_of(declared: str, default: str) -> str:
    """The declared type (`n: int = 3`); without one (papermill says "None"), the type of a literal default, so that
    `n = 3` is an int; else "None", which takes any JSON value."""
    if declared != "None":
        return declared
    return _LITERAL_TYPES.get(type(_literal(default)), declared)


def default_value(parameter: Parameter) -> Any:
    """The default as a JSON-able value when it is a literal, else None (the form shows the source text)."""
    value = _literal(parameter.default)
    return value if isinstance(value, (int, float, str, bool, list, dict, type(None))) else None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "int": ("an integer", _is_int),
    "float": ("a number", _is_number),
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "dict": ("an object", lambda v: isinstance(v, dict)),
}


def _expectation(type_name: str) -> tuple[str, Callable[[Any], bool]] | None:
    """What a declared type accepts, or None when any JSON value goes (untyped, None, or an unusual type)."""
    kind, nullable = type_kind(type_name)
    found = _CHECKS.get(kind)
    if found is None or not nullable:
        return found
    what, check = found
    return f"{what} or null", lambda v: v is None or check(v)


def _finite(value: Any) -> bool:
    """JSON has no NaN or Infinity (Python's parser accepts them): such values cannot be stored or sent back."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def check_parameters(declared: list[Parameter] | None, given: dict[str, Any]) -> None:
    """Raise Unprocessable naming every unknown or mistyped parameter, and the ones the notebook knows."""
    for name, value in given.items():
        if not _finite(value):
            raise Unprocessable(
                f"parameter '{name}': NaN and infinite numbers are not valid JSON values",
                code="invalid_parameters",
                problems=[{"parameter": name, "problem": "not a finite number"}],
            )
    if declared is None:
        return
    known = {p.name: p for p in declared}
    problems: list[dict[str, str]] = []
    for name, value in given.items():
        parameter = known.get(name)
        if parameter is None:
            problems.append({"parameter": name, "problem": "unknown parameter"})
            continue
        expected = _expectation(parameter.type)
        if expected is not None and not expected[1](value):
            problems.append(
                {
                    "parameter": name,
                    "problem": f"expected {expected[0]} ({parameter.type}), got {value!r}"[:300],
                }
            )
    if problems:
        names = ", ".join(sorted(known)) or "none (the notebook has no cell tagged 'parameters')"
        first = problems[0]
        raise Unprocessable(
            f"parameter '{first['parameter']}': {first['problem']}; the notebook's parameters are: {names}",
            code="invalid_parameters",
            problems=problems,
            known=[p.to_dict() for p in declared],
        )


def inject_parameters(nb: nbformat.NotebookNode, parameters: dict[str, Any]) -> nbformat.NotebookNode:
    """A copy of `nb` with papermill's `injected-parameters` cell after the `parameters` cell."""
    from papermill.parameterize import parameterize_notebook

    _ensure_tags(nb)
    nb.metadata.setdefault("papermill", {})
    kernel_name = nb.metadata.get("kernelspec", {}).get("name")
    return parameterize_notebook(nb, parameters, kernel_name=kernel_name, language=language_of(nb))
