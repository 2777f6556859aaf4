"""GET /api/notebooks/{path}/parameters: what a notebook declares, read without running it."""

from __future__ import annotations

import json
import shutil
import unicodedata
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import ServerProcess

pytestmark = pytest.mark.kernel


def parameters_of(server: ServerProcess, path: str) -> Any:
    with server.client() as client:
        return client.get(f"/api/notebooks/{quote(path)}/parameters")


def test_parameters_list_names_types_defaults_and_help(shared_server: ServerProcess) -> None:
    response = parameters_of(shared_server, "params.ipynb")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["notebook"] == "params.ipynb"
    assert body["kernel_name"] == "python3"
    assert body["language"] == "python"
    assert body["inspectable"] is True
    by_name = {p["name"]: p for p in body["parameters"]}
    assert [p["name"] for p in body["parameters"]] == ["n", "x", "label", "flag", "items", "opts"]
    assert {name: p["type"] for name, p in by_name.items()} == {
        "n": "int",
        "x": "float",
        "label": "str",
        "flag": "bool",
        "items": "list",
        "opts": "dict",
    }
    defaults = {name: p["default_value"] for name, p in by_name.items()}
    assert defaults == {"n": 1, "x": 0.5, "label": "a", "flag": False, "items": [], "opts": {}}
    assert type(defaults["n"]) is int
    assert type(defaults["flag"]) is bool
    assert by_name["label"]["default"] == '"a"'  # the source text as written
    # the kind of value each takes, read from the type for a form or the CLI (a list and a dict: JSON)
    assert {name: (p["kind"], p["nullable"]) for name, p in by_name.items()} == {
        "n": ("int", False),
        "x": ("float", False),
        "label": ("str", False),
        "flag": ("bool", False),
        "items": ("list", False),
        "opts": ("dict", False),
    }
    assert by_name["items"]["help"] == "a list"
    assert by_name["n"]["help"] == ""


def test_a_notebook_whose_kernel_is_not_installed_says_so_before_the_run(shared_server: ServerProcess) -> None:
    """Found from outside: the form of such a notebook opened as any other, and "unknown kernel" came on Run."""
    nb = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {"kernelspec": {"name": "ir", "language": "R", "display_name": "R"}},
        "cells": [],
    }
    (shared_server.workspace / "in-r.ipynb").write_text(json.dumps(nb))
    assert parameters_of(shared_server, "in-r.ipynb").json()["kernel_installed"] is False
    assert parameters_of(shared_server, "tiny.ipynb").json()["kernel_installed"] is True


def test_untyped_parameter_is_listed_with_its_default(shared_server: ServerProcess) -> None:
    body = parameters_of(shared_server, "tiny.ipynb").json()
    assert [(p["name"], p["default_value"]) for p in body["parameters"]] == [("x", 1)]


def test_notebook_in_a_subfolder(shared_server: ServerProcess) -> None:
    folder = shared_server.workspace / "sub" / "dir"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(shared_server.workspace / "params.ipynb", folder / "p.ipynb")

    response = parameters_of(shared_server, "sub/dir/p.ipynb")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["notebook"] == "sub/dir/p.ipynb"
    assert [p["name"] for p in body["parameters"]] == ["n", "x", "label", "flag", "items", "opts"]

    # It runs, too, and the job names it by its workspace path.
    with shared_server.client() as client:
        created = client.post("/api/jobs", json={"notebook": "sub/dir/p.ipynb", "parameters": {"n": 7}})
    assert created.status_code == 202, created.text
    job = shared_server.wait_for(created.json()["id"], timeout_s=60)
    assert job["state"] == "succeeded", job
    assert job["notebook"] == "sub/dir/p.ipynb"


def test_notebook_without_a_parameters_cell_has_an_empty_list(shared_server: ServerProcess) -> None:
    response = parameters_of(shared_server, "no_params.ipynb")
    assert response.status_code == 200
    body = response.json()
    assert body["parameters"] == []
    assert body["inspectable"] is True


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("malformed.ipynb", 422, "invalid_notebook"),
        ("invalid_schema.ipynb", 422, "invalid_notebook"),
        ("missing.ipynb", 404, "notebook_not_found"),
        ("not_a_notebook.txt", 422, "not_a_notebook"),
    ],
)
def test_unusable_notebooks(shared_server: ServerProcess, path: str, status: int, code: str) -> None:
    response = parameters_of(shared_server, path)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_a_folder_is_not_a_notebook(shared_server: ServerProcess) -> None:
    (shared_server.workspace / "just-a-folder").mkdir(exist_ok=True)
    response = parameters_of(shared_server, "just-a-folder")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "not_a_notebook"


@pytest.mark.parametrize("name", ["with space.ipynb", "odd #1.ipynb", "what?.ipynb", "semi;colon&amp.ipynb"])
def test_names_with_url_special_characters(shared_server: ServerProcess, name: str) -> None:
    shutil.copy(shared_server.workspace / "tiny.ipynb", shared_server.workspace / name)
    response = parameters_of(shared_server, name)
    assert response.status_code == 200, response.text
    assert response.json()["notebook"] == name


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_non_ascii_names_in_either_unicode_form(shared_server: ServerProcess, form: str) -> None:
    """A file is found by the exact name it has on disk (files copied from macOS are often NFD)."""
    name = unicodedata.normalize(form, f"café-{form}.ipynb")
    shutil.copy(shared_server.workspace / "tiny.ipynb", shared_server.workspace / name)
    response = parameters_of(shared_server, name)
    assert response.status_code == 200, response.text
    with shared_server.client() as client:
        created = client.post("/api/jobs", json={"notebook": name})
    assert created.status_code == 202, created.text
    job = shared_server.wait_for(created.json()["id"], timeout_s=60)
    assert job["state"] == "succeeded", job


def test_a_symlink_that_stays_inside_the_workspace_is_followed(shared_server: ServerProcess) -> None:
    link = shared_server.workspace / "alias.ipynb"
    if not link.is_symlink():
        link.symlink_to(shared_server.workspace / "params.ipynb")
    response = parameters_of(shared_server, "alias.ipynb")
    assert response.status_code == 200, response.text
    assert [p["name"] for p in response.json()["parameters"]][:2] == ["n", "x"]
