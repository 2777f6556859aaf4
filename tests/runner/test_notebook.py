"""Notebooks as nbclient takes them: older nbformat 4 minors, metadata nbclient does without, the kernel it picks,
and refusals that name the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

from nbrelay.runner.notebook import (
    DEFAULT_KERNEL,
    NotebookRefused,
    TooManyCells,
    complete_kernelspec,
    kernel_for,
    output_node,
    parse,
    runs,
)

COMPAT = Path(__file__).parents[1] / "notebooks" / "compat"
INSTALLED = {"python3": "python", "ir": "R", "julia-1.10": "julia"}


def notebook(**metadata: Any) -> dict[str, Any]:
    cell = {"cell_type": "code", "id": "a", "metadata": {}, "outputs": [], "source": "1", "execution_count": None}
    return {
        "cells": [cell],
        "metadata": metadata,
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@pytest.mark.parametrize("name", ["nbformat_4_1.ipynb", "nbformat_4_4_fails.ipynb"])
def test_older_minor_versions_are_upgraded_as_nbformat_does(name: str) -> None:
    nb = parse((COMPAT / name).read_bytes())
    assert (nb.nbformat, nb.nbformat_minor) == (4, 5)
    assert nb.metadata.orig_nbformat_minor in (1, 4)
    assert len({cell.id for cell in nb.cells}) == len(nb.cells)
    nbformat.validate(nb)


def test_cell_ids_missing_or_repeated_in_4_5_are_made_without_a_warning(recwarn: pytest.WarningsRecorder) -> None:
    data = notebook()
    data["cells"] = [dict(data["cells"][0]), dict(data["cells"][0])]
    del data["cells"][0]["id"]
    nb = parse(json.dumps(data))
    assert len({cell.id for cell in nb.cells}) == 2
    assert not recwarn.list


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"kernelspec": {"display_name": "Python 3", "language": "python"}},
        {"kernelspec": {"language": "python"}},
        {"kernelspec": {"name": "python3"}},
        {"kernelspec": {}},
        {"language_info": {"version": "3.11"}},
    ],
)
def test_metadata_nbclient_runs_without_is_accepted(metadata: dict[str, Any]) -> None:
    nb = parse(json.dumps(notebook(**metadata)))
    assert kernel_for(nb, INSTALLED) == "python3"
    assert "language_info" not in nb.metadata  # nbclient writes the kernel's own
    complete_kernelspec(nb, "python3")
    nbformat.validate(nb)  # as the executed notebook is written


def test_kernel_named_by_the_notebook_wins() -> None:
    nb = parse(json.dumps(notebook(kernelspec={"name": "ir", "display_name": "R"})))
    assert kernel_for(nb, INSTALLED) == "ir"


@pytest.mark.parametrize(
    ("metadata", "kernel"),
    [
        ({"kernelspec": {"language": "R", "display_name": "R"}}, "ir"),
        ({"language_info": {"name": "julia"}}, "julia-1.10"),
        ({"kernelspec": {"language": "PYTHON"}}, "python3"),
    ],
)
def test_without_a_name_the_kernel_of_the_notebooks_language(metadata: dict[str, Any], kernel: str) -> None:
    assert kernel_for(parse(json.dumps(notebook(**metadata))), INSTALLED) == kernel


def test_a_language_no_installed_kernel_runs_is_refused_naming_the_field() -> None:
    nb = parse(json.dumps(notebook(kernelspec={"language": "scala", "display_name": "Scala"})))
    with pytest.raises(NotebookRefused) as refused:
        kernel_for(nb, INSTALLED)
    message = str(refused.value)
    assert "metadata.kernelspec has no 'name'" in message and "'scala'" in message
    assert "python3 (python)" in message and "kernel_name" in message


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (lambda d: d["cells"][0].update(source=5), ["cells[0].source"]),
        (lambda d: d["metadata"].update(kernelspec={"name": 5}), ["metadata.kernelspec.name", "not of type 'string'"]),
        (lambda d: d["cells"][0].update(outputs=[{"output_type": "stream"}]), ["cells[0].outputs[0]", "required"]),
        (lambda d: d.update(nbformat=5), ["nbformat is 5", "3 and 4"]),
        (lambda d: d.update(nbformat_minor="x"), ["nbformat_minor is 'x'", "integer"]),
        (lambda d: d.update(metadata=[]), ["metadata: expected an object"]),
        (lambda d: d.update(cells="nope"), ["cells: expected a list of cells"]),
        (lambda d: d.pop("cells"), ["cells: expected a list of cells"]),
        (lambda d: d.update(cells=[{"cell_type": "raw", "metadata": {}, "source": ""}, 5]), ["cells[1]: expected an"]),
        (lambda d: d["cells"][0].pop("metadata"), ["cells[0]: metadata: expected an object"]),  # was "'metadata'"
        (lambda d: d["cells"][0].pop("cell_type"), ["cells[0]: cell_type is None; expected code, markdown or raw"]),
        (lambda d: d["cells"][0].update(cell_type="heading"), ["cells[0]: cell_type is 'heading'"]),
        (lambda d: d.pop("metadata"), ["metadata: expected an object"]),
        (lambda d: d.update(nbformat_minor=1, cells=None), ["cells: expected a list of cells"]),
    ],
)
def test_refusals_name_the_field_and_what_is_accepted(change: Any, fragments: list[str]) -> None:
    data = notebook(kernelspec={"name": "python3", "display_name": "Python 3"})
    change(data)
    with pytest.raises(NotebookRefused) as refused:
        parse(json.dumps(data))
    for fragment in fragments:
        assert fragment in str(refused.value)


def test_not_json_is_refused() -> None:
    with pytest.raises(NotebookRefused, match="not valid JSON: Expecting"):
        parse(b"{not json")


def test_json_nested_past_the_parser_is_refused_not_crashed() -> None:
    with pytest.raises(NotebookRefused, match="nested deeper"):
        parse(b'{"cells": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")


def test_more_cells_than_asked_for_are_refused_before_nbformat_reads_them() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1") for _ in range(3)])
    text = nbformat.writes(nb)
    assert len(parse(text, max_cells=3).cells) == 3
    with pytest.raises(TooManyCells, match="3 cells; the limit is 2") as refused:
        parse(text, max_cells=2)
    assert refused.value.cells == 3


def test_the_numbered_cells_are_those_nbclient_runs() -> None:
    nb = parse((COMPAT / "tags.ipynb").read_bytes())
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("text"))
    nb.cells.insert(0, nbformat.v4.new_code_cell("   \n"))
    assert [runs(cell) for cell in nb.cells] == [False, False, True, False, True, True]


def test_the_default_kernel_is_jupyter_clients_native_kernel() -> None:
    """runner/notebook.py names it without importing jupyter_client (slow to import for a server start)."""
    from jupyter_client.kernelspec import NATIVE_KERNEL_NAME

    assert DEFAULT_KERNEL == NATIVE_KERNEL_NAME


@pytest.mark.parametrize(
    ("msg_type", "content"),
    [
        ("stream", {"name": "stderr", "text": "warn\n"}),
        ("display_data", {"data": {"text/plain": "1", "image/png": "iVBOR"}, "metadata": {"image/png": {"width": 3}}}),
        ("execute_result", {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 4}),
        ("error", {"ename": "ValueError", "evalue": "boom", "traceback": ["a", "b"]}),
    ],
)
def test_output_node_is_the_output_nbformat_makes(msg_type: str, content: dict) -> None:
    msg = {"header": {"msg_type": msg_type}, "content": content}
    made = output_node(msg)
    assert made == nbformat.v4.output_from_msg(msg)
    assert isinstance(made.get("data", made), nbformat.NotebookNode)  # attribute access, as nbclient uses it


def test_output_node_refuses_what_is_no_output_and_serves_nbclients_runs() -> None:
    import nbclient.client

    import nbrelay.runner.execute  # noqa: F401  (it hands output_node to nbclient)

    with pytest.raises(ValueError, match="Unrecognized output msg type"):
        output_node({"header": {"msg_type": "status"}, "content": {"execution_state": "idle"}})
    assert nbclient.client.output_from_msg is output_node
