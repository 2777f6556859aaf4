"""The local executor through a real server process: the concurrency cap, FIFO, dead workers, crash recovery."""

from __future__ import annotations

import os
import signal
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


def test_never_more_than_n_running_and_fifo(server_factory: Any) -> None:
    server = server_factory(workers=2)
    ids = [submit(server, "sleep.ipynb", seconds=0.8) for _ in range(5)]
    most_running = 0
    with server.client() as http:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            jobs = http.get("/api/jobs", params={"limit": 50}).json()["jobs"]
            running = [j for j in jobs if j["state"] == "running"]
            most_running = max(most_running, len(running))
            queued = sorted((j for j in jobs if j["state"] == "queued"), key=lambda j: j["id"])
            assert [j["queue_position"] for j in queued] == list(range(1, len(queued) + 1))
            if all(j["state"] == "succeeded" for j in jobs):
                break
            time.sleep(0.02)
        final = {j["id"]: j for j in http.get("/api/jobs").json()["jobs"]}
    assert most_running == 2
    assert all(final[i]["state"] == "succeeded" for i in ids)
    started = sorted(ids, key=lambda i: final[i]["started_at"])
    assert started[:2] == sorted(ids[:2]) or set(started[:2]) == set(ids[:2])
    assert set(started[2:]) == set(ids[2:])
    assert started.index(ids[2]) < started.index(ids[4])  # FIFO among the queued


def test_a_dead_worker_fails_its_job_and_is_replaced(server_factory: Any) -> None:
    tag = uuid.uuid4().hex
    server = server_factory(workers=1, env={"NBRELAY_TEST_TAG": tag})
    job_id = submit(server, "sleep.ipynb", seconds=120)
    server.wait_for(job_id, states=["running"])
    wait_until(lambda: len(tagged_kernels(tag)) >= 1, 30, "the job's kernel runs")
    with server.client() as http:
        wait_until(lambda: http.get(f"/api/jobs/{job_id}").json()["progress"]["total"] > 0, 30, "job started")
    # The kernel running the job is the busy one; its parent is the worker process.
    kernels = tagged_kernels(tag)
    worker_pids = set(kernels.values())
    assert len(worker_pids) == 1
    os.kill(worker_pids.pop(), signal.SIGKILL)
    job = server.wait_for(job_id, timeout_s=15)
    assert job["state"] == "failed"
    assert job["error"]["reason"] == "worker process died (exit code -9)"
    wait_until(lambda: not set(kernels) & set(tagged_kernels(tag)), 15, "the dead worker's kernels exit")
    again = submit(server, "tiny.ipynb")
    assert server.wait_for(again, timeout_s=90)["state"] == "succeeded"


def test_crash_recovery_fails_running_jobs_and_runs_queued_ones(server_factory: Any) -> None:
    tag = uuid.uuid4().hex
    server = server_factory(workers=1, env={"NBRELAY_TEST_TAG": tag})
    running = submit(server, "sleep.ipynb", seconds=120)
    queued = submit(server, "tiny.ipynb")
    server.wait_for(running, states=["running"])
    wait_until(lambda: tagged_kernels(tag), 30, "kernels started")
    server.kill()
    # Workers die with the server, and their kernels follow: nothing keeps running a job no one owns.
    wait_until(lambda: not tagged_kernels(tag), 20, "no kernel outlives a killed server")
    server.start()
    job = server.wait_for(running, timeout_s=10)
    assert job["state"] == "failed" and job["error"]["reason"] == "interrupted: server restarted"
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
