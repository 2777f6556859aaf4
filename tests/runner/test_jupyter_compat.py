"""A notebook ends here as it ends under Jupyter: each notebook of tests/notebooks/compat runs through a real nbrelay
server and with nbclient directly, and both must agree on the outcome (succeeded, failed, timed out), the failing
cell (numbered as the report numbers it: the n-th code cell that runs) and the exception's name.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from traitlets.config import Config

from tests.conftest import ServerProcess

pytestmark = pytest.mark.kernel

CELL_TIMEOUT_S = 3


@dataclass(frozen=True)
class Ending:
    state: str
    cell: int | None = None  # the failing cell, 1-based
    ename: str | None = None


# notebook -> how it ends under nbclient (and so must end here)
CASES: dict[str, Ending] = {
    "succeeds": Ending("succeeded"),
    "raises_in_cell_3": Ending("failed", 3, "ValueError"),
    "sys_exit": Ending("failed", 2, "SystemExit"),
    "cell_timeout": Ending("timed_out", 2),
    "kernelspec_without_name": Ending("succeeded"),
    "no_kernelspec": Ending("succeeded"),
    "no_language_info": Ending("failed", 2, "ZeroDivisionError"),
    "nbformat_4_1": Ending("succeeded"),
    "nbformat_4_4_fails": Ending("failed", 2, "AttributeError"),
    "history": Ending("succeeded"),
    "display_outputs": Ending("succeeded"),
    "input_refused": Ending("failed", 2, "StdinNotImplementedError"),
    "tags": Ending("failed", 3, "AttributeError"),
    "kernel_dies": Ending("failed", 2),
}


def under_nbclient(path: Path) -> Ending:
    """Run the notebook as `jupyter execute` would, and say how it ended."""
    nb = nbformat.read(path, as_version=4)
    running: list[int] = []

    def on_cell_execute(cell: Any, cell_index: int) -> None:
        running.append(client.code_cells_executed + 1)  # the execution count nbclient gives this cell

    # Over IPC, as nbrelay's own kernels run: over TCP the kernel binds ports its manager found free a moment
    # before, and another test's outgoing connection may take one of them as its source port first ("address
    # already in use", the kernel dies before it starts: seen in a CI run).
    with tempfile.TemporaryDirectory(prefix="nbc-") as sockets:
        config = Config({"KernelManager": {"transport": "ipc", "ip": f"{sockets}/k"}})
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT_S,
            on_cell_execute=on_cell_execute,
            resources={"metadata": {"path": str(path.parent)}},
            config=config,
        )
        return _ending(client, running)


def _ending(client: NotebookClient, running: list[int]) -> Ending:
    try:
        client.execute()
    except CellTimeoutError:
        return Ending("timed_out", running[-1])
    except DeadKernelError:
        return Ending("failed", running[-1])
    except CellExecutionError as exc:
        return Ending("failed", running[-1], exc.ename)
    return Ending("succeeded")


def under_nbrelay(job: dict[str, Any]) -> Ending:
    error = job.get("error") or {}
    if job["state"] == "succeeded":
        return Ending("succeeded")
    # A kernel that died or a cell stopped by the timeout raised nothing of its own: nbclient names no exception.
    ename = error.get("ename") if job["state"] == "failed" and not error["reason"].startswith("kernel died") else None
    return Ending(job["state"], error.get("cell"), ename)


@pytest.fixture(scope="module")
def submitted(shared_server: ServerProcess) -> Iterator[dict[str, int]]:
    """Every compat notebook submitted at once, so the server runs them while nbclient runs its own."""
    ids = {}
    with shared_server.client() as http:
        for name in CASES:
            answer = http.post("/api/jobs", json={"notebook": f"compat/{name}.ipynb", "cell_timeout_s": CELL_TIMEOUT_S})
            assert answer.status_code == 202, answer.text
            ids[name] = answer.json()["id"]
    yield ids


@pytest.mark.parametrize("name", list(CASES))
def test_ends_as_under_nbclient(shared_server: ServerProcess, submitted: dict[str, int], name: str) -> None:
    expected = CASES[name]
    assert under_nbclient(shared_server.workspace / "compat" / f"{name}.ipynb") == expected
    job = shared_server.wait_for(submitted[name], timeout_s=180)
    assert under_nbrelay(job) == expected, job
    if expected.cell is not None:
        assert job["error"]["reason"].startswith(f"cell {expected.cell} ") or "kernel died" in job["error"]["reason"]
    assert job["report_url"], job


def test_the_report_numbers_the_failing_cell_as_the_error_does(
    shared_server: ServerProcess, submitted: dict[str, int]
) -> None:
    job = shared_server.wait_for(submitted["raises_in_cell_3"], timeout_s=180)
    with shared_server.client() as http:
        executed = http.get(job["notebook_url"]).json()
    counts = {
        c["execution_count"]
        for c in executed["cells"]
        if c["cell_type"] == "code" and "raised in cell 3" in "".join(c["source"])
    }
    assert counts == {job["error"]["cell"]} == {3}


def test_history_is_in_memory_as_under_nbclient(shared_server: ServerProcess, submitted: dict[str, int]) -> None:
    job = shared_server.wait_for(submitted["history"], timeout_s=180)
    assert job["state"] == "succeeded", job
    with shared_server.client() as http:
        executed = http.get(job["notebook_url"]).json()
    printed = ["".join(o.get("text", "")) for c in executed["cells"] for o in c["outputs"]]
    assert "a = 1" in printed[0]  # %history -l 1
    assert int(printed[1]) >= 2  # the history database holds this run's cells


def write(folder: Path, name: str, metadata: dict[str, Any]) -> str:
    nb = json.loads(json.dumps(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('hi')")])))
    (folder / name).write_text(json.dumps({**nb, "metadata": metadata}))
    return name


def test_a_refusal_names_the_field_and_what_would_be_accepted(shared_server: ServerProcess) -> None:
    name = write(shared_server.workspace, "scala.ipynb", {"kernelspec": {"display_name": "Scala", "language": "scala"}})
    with shared_server.client() as http:
        refused = http.post("/api/jobs", json={"notebook": name})
        chosen = http.post("/api/jobs", json={"notebook": name, "kernel_name": "python3"})
        listed = http.get(f"/api/notebooks/{name}/parameters")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "unknown_kernel"
    assert "metadata.kernelspec has no 'name'" in error["message"] and "'scala'" in error["message"]
    assert "python3 (python)" in error["message"]
    assert chosen.status_code == 202, chosen.text  # a kernel asked for settles it
    assert listed.status_code == 422 and listed.json()["error"]["code"] == "unknown_kernel"


def test_a_schema_refusal_names_the_field(shared_server: ServerProcess) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    data = json.loads(json.dumps(nb))
    data["cells"][0]["outputs"] = [{"output_type": "stream", "name": "stdout"}]
    (shared_server.workspace / "bad_output.ipynb").write_text(json.dumps(data))
    answer = httpx.post(f"{shared_server.url}/api/jobs", json={"notebook": "bad_output.ipynb"}, timeout=30)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_notebook"
    assert "cells[0].outputs[0]: 'text' is a required property" in error["message"]


def test_a_parameter_takes_its_type_from_its_literal_default(shared_server: ServerProcess) -> None:
    """tiny.ipynb declares `x = 1` without a type: x is an int."""
    with shared_server.client() as http:
        refused = http.post("/api/jobs", json={"notebook": "tiny.ipynb", "parameters": {"x": "abc"}})
        listed = http.get("/api/notebooks/tiny.ipynb/parameters").json()
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["code"] == "invalid_parameters"
    assert error["message"].startswith("parameter 'x': expected an integer (int), got 'abc'")
    assert [(p["name"], p["type"]) for p in listed["parameters"]] == [("x", "int")]
