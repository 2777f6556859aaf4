"""The `nbrelay` command, run for real (`python -m nbrelay`) against a real server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import NOTEBOOKS, ServerProcess, free_port

pytestmark = pytest.mark.kernel


def nbrelay(*args: str, timeout_s: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBRELAY_")}
    env["COLUMNS"] = "250"  # rich wraps at the terminal width; keep messages on one line for the asserts
    env["NO_COLOR"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "nbrelay", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        cwd=cwd,
        check=False,
    )


def job_ids(server: ServerProcess) -> set[int]:
    response = httpx.get(f"{server.url}/api/jobs", params={"limit": 500}, timeout=30)
    return {job["id"] for job in response.json()["jobs"]}


def the_new_job(server: ServerProcess, before: set[int], result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    new = job_ids(server) - before
    assert len(new) == 1, f"expected one new job, got {new}\n{result.stdout}\n{result.stderr}"
    job_id = new.pop()
    assert re.search(rf"\bjob {job_id}\b", result.stdout), result.stdout
    return httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=30).json()  # type: ignore[no-any-return]


# help ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["serve"], ["run"], ["jobs"], ["token"]])
def test_help_works_for_every_command(command: list[str]) -> None:
    result = nbrelay(*command, "--help", timeout_s=60)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
    if not command:
        for name in ("serve", "run", "jobs"):
            assert name in result.stdout
    else:
        assert command[0] in result.stdout
    if command == ["run"]:
        for option in ("--param", "--server", "--local", "--timeout"):
            assert option in result.stdout


# run on a server ----------------------------------------------------------------------------------------------------
def test_run_sends_parameters_typed_as_the_notebook_declares(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay(
        "run",
        "params.ipynb",
        "-p",
        "n=3",
        "-p",
        "label=hi",
        "-p",
        "flag=true",
        "-p",
        "items=[1,2]",
        "--server",
        shared_server.url,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    job = the_new_job(shared_server, before, result)
    assert job["state"] == "succeeded"
    assert job["parameters"] == {"n": 3, "label": "hi", "flag": True, "items": [1, 2]}


def test_run_keeps_string_parameters_as_strings(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay(
        "run", "params.ipynb", "-p", "label=42", "-p", "x=2", "-p", "flag=no", "--server", shared_server.url
    )
    assert result.returncode == 0, result.stdout + result.stderr
    job = the_new_job(shared_server, before, result)
    assert job["parameters"] == {"label": "42", "x": 2, "flag": False}


def test_run_of_a_failing_notebook_exits_1_and_prints_the_error(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay("run", "fail.ipynb", "--server", shared_server.url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed" in result.stdout
    assert "ValueError" in result.stdout
    assert "boom in cell 2" in result.stdout
    assert the_new_job(shared_server, before, result)["state"] == "failed"


def test_run_with_an_unknown_parameter_fails_with_the_message(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay("run", "params.ipynb", "-p", "nope=1", "--server", shared_server.url)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "nope" in output
    assert "unknown parameter" in output
    assert job_ids(shared_server) == before


def test_run_with_a_bad_boolean_fails_before_submitting(shared_server: ServerProcess) -> None:
    before = job_ids(shared_server)
    result = nbrelay("run", "params.ipynb", "-p", "flag=maybe", "--server", shared_server.url)
    assert result.returncode != 0
    assert "maybe" in result.stdout + result.stderr
    assert job_ids(shared_server) == before


def test_run_of_a_missing_notebook_fails_with_the_message(shared_server: ServerProcess) -> None:
    result = nbrelay("run", "missing.ipynb", "--server", shared_server.url)
    assert result.returncode != 0
    assert "missing.ipynb" in result.stdout + result.stderr


@pytest.mark.parametrize("name", ["with space.ipynb", "odd #1.ipynb", "what?.ipynb"])
def test_run_a_notebook_whose_name_needs_quoting_in_a_url(shared_server: ServerProcess, name: str) -> None:
    shutil.copy(shared_server.workspace / "tiny.ipynb", shared_server.workspace / name)
    before = job_ids(shared_server)
    result = nbrelay("run", name, "--server", shared_server.url)
    assert result.returncode == 0, result.stdout + result.stderr
    job = the_new_job(shared_server, before, result)
    assert job["notebook"] == name
    assert job["state"] == "succeeded"


def test_run_against_an_unreachable_server_fails_clearly() -> None:
    result = nbrelay("run", "tiny.ipynb", "--server", f"http://127.0.0.1:{free_port()}", timeout_s=60)
    assert result.returncode != 0
    assert "cannot reach" in result.stdout + result.stderr


# jobs ---------------------------------------------------------------------------------------------------------------
def test_jobs_json_lists_the_jobs(shared_server: ServerProcess) -> None:
    created = httpx.post(
        f"{shared_server.url}/api/jobs", json={"notebook": "params.ipynb", "parameters": {"label": "cli-json"}}
    ).json()
    shared_server.wait_for(created["id"], timeout_s=60)
    result = nbrelay("jobs", "--server", shared_server.url, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    api = httpx.get(f"{shared_server.url}/api/jobs", timeout=30).json()
    assert listed["total"] == api["total"]
    newest = listed["jobs"][0]
    assert newest["id"] == created["id"]
    assert newest["parameters"] == {"label": "cli-json"}
    assert newest["state"] == "succeeded"


def test_jobs_filters_by_state_and_notebook(shared_server: ServerProcess) -> None:
    created = httpx.post(f"{shared_server.url}/api/jobs", json={"notebook": "fail.ipynb"}).json()
    shared_server.wait_for(created["id"], timeout_s=60)
    result = nbrelay("jobs", "--server", shared_server.url, "--json", "--state", "failed", "--notebook", "fail.ipynb")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert created["id"] in [j["id"] for j in listed["jobs"]]
    assert {(j["state"], j["notebook"]) for j in listed["jobs"]} == {("failed", "fail.ipynb")}


def test_jobs_table(shared_server: ServerProcess) -> None:
    result = nbrelay("jobs", "--server", shared_server.url)
    assert result.returncode == 0, result.stderr
    assert "notebook" in result.stdout
    assert "params.ipynb" in result.stdout


def test_jobs_with_an_unknown_state_fails(shared_server: ServerProcess) -> None:
    result = nbrelay("jobs", "--server", shared_server.url, "--state", "bogus")
    assert result.returncode != 0
    assert "bogus" in result.stdout + result.stderr


# run --local --------------------------------------------------------------------------------------------------------
def test_run_local_writes_the_report_next_to_the_notebook(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks-copy"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / "tiny.ipynb", folder / "tiny.ipynb")
    result = nbrelay("run", "--local", str(folder / "tiny.ipynb"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "succeeded" in result.stdout
    report = folder / "tiny.html"
    assert report.is_file()
    html = report.read_text()
    assert "<html" in html.lower()
    # Nothing but the report is left next to the notebook.
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.html", "tiny.ipynb"]


def test_run_local_of_a_missing_file_fails(tmp_path: Path) -> None:
    result = nbrelay("run", "--local", str(tmp_path / "nope.ipynb"), timeout_s=60)
    assert result.returncode != 0
    assert "nope.ipynb" in result.stdout + result.stderr
