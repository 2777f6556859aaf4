"""What only the local executor does (the contract is in test_contract.py): a server that crashes or stops
ends the jobs it was running, and says why."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.conftest import kernel_processes

pytestmark = pytest.mark.kernel


def tagged_kernels(tag: str) -> dict[int, int]:
    """{pid: parent pid} of the kernels started by the server whose environment carries `tag`."""
    return kernel_processes(tag)


def wait_until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def submit(server: Any, notebook: str, **parameters: Any) -> int:
    with server.client() as http:
        response = http.post("/api/jobs", json={"notebook": notebook, "parameters": parameters})
    assert response.status_code == 202, response.text
    return int(response.json()["id"])


def test_crash_recovery_fails_running_jobs_and_runs_queued_ones(server_factory: Any) -> None:
    tag = uuid.uuid4().hex
    server = server_factory(workers=1, env={"NBR_TEST_TAG": tag})
    running = submit(server, "sleep.ipynb", seconds=120)
    queued = submit(server, "tiny.ipynb")
    server.wait_for(running, states=["running"])
    wait_until(lambda: tagged_kernels(tag), 30, "kernels started")
    with server.client() as http:  # in `time.sleep(seconds)`: the fifth of six code cells (parameters injected)
        wait_until(lambda: http.get(f"/api/jobs/{running}").json()["progress"]["cell"] == 4, 30, "job sleeps")
    server.kill()
    # Workers die with the server, and their kernels follow: nothing keeps running a job no one owns.
    wait_until(lambda: not tagged_kernels(tag), 20, "no kernel outlives a killed server")
    server.start()
    job = server.wait_for(running, timeout_s=10)
    assert job["state"] == "failed" and job["error"]["reason"] == "interrupted: server restarted"
    # A partial report, from the store and the notebook: what happened, and the cell it was in.
    assert job["report_url"] == f"/api/jobs/{running}/report", job
    with server.client() as http:
        report = http.get(job["report_url"])
    assert report.status_code == 200
    assert "interrupted: server restarted" in report.text and "stopped in code cell 5 of 6" in report.text
    assert server.wait_for(queued, timeout_s=90)["state"] == "succeeded"


def test_graceful_stop_marks_running_jobs_interrupted(server_factory: Any) -> None:
    server = server_factory(workers=1)
    job_id = submit(server, "sleep.ipynb", seconds=120)
    server.wait_for(job_id, states=["running"])
    with server.client() as http:
        wait_until(lambda: http.get(f"/api/jobs/{job_id}").json()["progress"]["total"] > 0, 30, "job started")
    server.stop()
    server.start()
    job = server.wait_for(job_id, timeout_s=10)
    assert job["state"] == "failed"
    assert job["error"]["reason"] == "interrupted: server stopped"
