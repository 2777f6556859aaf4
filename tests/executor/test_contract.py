"""The executor contract, one body for every executor: `local` (the server's worker processes) and `celery`
(`nbrelay worker` processes on PostgreSQL, Redis and Celery). The cap, FIFO, outcomes, cancel, timeouts, and a
worker process that dies."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from tests.conftest import free_port

pytestmark = [pytest.mark.kernel, pytest.mark.postgres, pytest.mark.redis]

KINDS = ["local", "celery"]
# No warm kernel waiting for the next job: every kernel alive then is a job's, so "none left" means something.
NO_SPARE_KERNELS = {"NBRELAY_INTERRUPT_GRACE_S": "1", "NBRELAY_KERNEL_POOL_SIZE": "0"}
TINY_CELLS = 2  # tiny.ipynb's code cells; no parameters are injected when none are passed


def wait_until(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def started(deployment: Any, job_id: int) -> None:
    """The job's first cell runs (its kernel is up)."""
    wait_until(lambda: deployment.job(job_id)["progress"]["total"] > 0, 60, f"job {job_id} started")


@pytest.mark.parametrize("kind", [*KINDS, "celery-rabbitmq"])
def test_outcomes_reports_and_errors(deploy: Any, kind: str) -> None:
    d = deploy(kind, slots=2)
    ok, bad = d.submit("tiny.ipynb"), d.submit("fail.ipynb")
    done = d.wait_for(ok, timeout_s=90)
    assert done["state"] == "succeeded", d.logs()
    assert done["report_url"] == f"/api/jobs/{ok}/report"
    assert done["progress"] == {"cell": TINY_CELLS, "total": TINY_CELLS, "phase": None}
    with d.server.client() as http:
        report = http.get(done["report_url"])
    assert report.status_code == 200 and "<html" in report.text.lower()
    failed = d.wait_for(bad, timeout_s=90)
    assert failed["state"] == "failed" and failed["error"]["cell"] == 2
    assert (failed["error"]["ename"], failed["error"]["evalue"]) == ("ValueError", "boom in cell 2")


@pytest.mark.parametrize("kind", KINDS)
def test_never_more_than_the_slots_running_and_fifo(deploy: Any, kind: str) -> None:
    d = deploy(kind, slots=2)
    ids = [d.submit("sleep.ipynb", seconds=0.8) for _ in range(5)]
    most_running = 0
    with d.server.client() as http:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            jobs = http.get("/api/jobs", params={"limit": 50}).json()["jobs"]
            most_running = max(most_running, sum(j["state"] == "running" for j in jobs))
            queued = sorted((j for j in jobs if j["state"] == "queued"), key=lambda j: j["id"])
            assert [j["queue_position"] for j in queued] == list(range(1, len(queued) + 1))
            if all(j["state"] == "succeeded" for j in jobs):
                break
            time.sleep(0.02)
        final = {j["id"]: j for j in http.get("/api/jobs").json()["jobs"]}
    assert most_running == 2, d.logs()
    assert all(final[i]["state"] == "succeeded" for i in ids)
    order = sorted(ids, key=lambda i: final[i]["started_at"])
    assert set(order[:2]) == set(ids[:2]) and set(order[2:]) == set(ids[2:])
    assert order.index(ids[2]) < order.index(ids[4])  # FIFO among the queued


@pytest.mark.parametrize("kind", [*KINDS, "celery-rabbitmq"])
def test_cancel_running_and_queued(deploy: Any, kind: str) -> None:
    d = deploy(kind, slots=1, env=NO_SPARE_KERNELS)
    running, queued = d.submit("sleep.ipynb", seconds=120), d.submit("tiny.ipynb")
    started(d, running)
    wait_until(d.kernels, 30, "the job's kernel runs")
    with d.server.client() as http:
        assert http.post(f"/api/jobs/{queued}/cancel").json()["state"] == "cancelled"
        asked = time.monotonic()
        assert http.post(f"/api/jobs/{running}/cancel").status_code == 202
    job = d.wait_for(running, timeout_s=15)
    assert job["state"] == "cancelled"
    assert time.monotonic() - asked < 5, "a cancel ends the job within 5 s"
    wait_until(lambda: not d.kernels(), 15, "no kernel is left")
    assert d.job(queued)["started_at"] is None  # a job cancelled while queued never runs


@pytest.mark.parametrize("kind", KINDS)
def test_job_timeout(deploy: Any, kind: str) -> None:
    d = deploy(kind, slots=1, env=NO_SPARE_KERNELS)
    with d.server.client() as http:
        response = http.post(
            "/api/jobs", json={"notebook": "sleep.ipynb", "parameters": {"seconds": 60}, "timeout_s": 3}
        )
    job = d.wait_for(response.json()["id"], timeout_s=60)
    assert job["state"] == "timed_out"
    wait_until(lambda: not d.kernels(), 15, "no kernel is left")


@pytest.mark.parametrize("kind", KINDS)
def test_a_dead_worker_process_fails_its_job_and_is_replaced(deploy: Any, kind: str) -> None:
    d = deploy(kind, slots=1)
    job_id = d.submit("sleep.ipynb", seconds=120)
    started(d, job_id)
    kernels = wait_until(d.kernels, 30, "the job's kernel runs")
    worker_pids = set(kernels.values())  # the kernel's parent is the worker process running the job
    assert len(worker_pids) == 1
    # In `time.sleep(seconds)`: the fifth of six code cells (the parameters are injected as one more).
    wait_until(lambda: d.job(job_id)["progress"]["cell"] == 4, 30, f"job {job_id} sleeps")
    os.kill(worker_pids.pop(), signal.SIGKILL)
    job = d.wait_for(job_id, timeout_s=15)
    assert job["state"] == "failed"
    assert job["error"]["reason"] == "worker process died (exit code -9)"
    assert job["report_url"] == f"/api/jobs/{job_id}/report", job  # a partial report: what happened, how far it got
    with d.server.client() as http:
        report = http.get(job["report_url"])
    assert report.status_code == 200
    assert "worker process died (exit code -9)" in report.text and "stopped in code cell 5 of 6" in report.text
    wait_until(lambda: not set(kernels) & set(d.kernels()), 15, "the dead worker's kernels exit")
    again = d.submit("tiny.ipynb")
    assert d.wait_for(again, timeout_s=90)["state"] == "succeeded"


@pytest.mark.parametrize("kind", KINDS)
def test_a_kernel_past_the_memory_limit_fails_its_job_and_nothing_else(deploy: Any, kind: str) -> None:
    """NBRELAY_KERNEL_MEMORY_MAX_MB: a cell that allocates past it gets MemoryError, and its job fails in that
    cell saying so; the worker lives on, and a job within the limit, then the next one, succeed."""
    d = deploy(kind, slots=1, env={"NBRELAY_KERNEL_MEMORY_MAX_MB": "600"})
    hog, modest, after = (
        d.submit("memory_hog.ipynb", mb=2048),
        d.submit("memory_hog.ipynb", mb=64),
        d.submit("tiny.ipynb"),
    )
    failed = d.wait_for(hog, timeout_s=90)
    assert failed["state"] == "failed", d.logs()
    # In the hog's cell: the third code cell, after the notebook's parameters and the injected ones.
    assert (failed["error"]["ename"], failed["error"]["cell"]) == ("MemoryError", 3), failed["error"]
    assert "out of memory" in failed["error"]["reason"] and "600 MB" in failed["error"]["reason"], failed["error"]
    assert d.wait_for(modest, timeout_s=90)["state"] == "succeeded", d.logs()
    assert d.wait_for(after, timeout_s=90)["state"] == "succeeded", d.logs()


@pytest.mark.parametrize("kind", [*KINDS, "celery-rabbitmq"])
def test_ready_when_the_database_hub_and_executor_answer(deploy: Any, kind: str) -> None:
    d = deploy(kind, workers=0)  # a web node is ready with no worker up: its jobs wait in the queue
    with d.server.client() as http:
        answer = http.get("/api/ready")
    assert answer.status_code == 200, answer.text
    assert {name: check["ok"] for name, check in answer.json()["checks"].items()} == {
        "database": True,
        "hub": True,
        "executor": True,
    }


def test_not_ready_while_celerys_broker_does_not_answer(deploy: Any) -> None:
    closed = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens there
    d = deploy("celery", workers=0, env={"NBRELAY_CELERY_BROKER_URL": closed})
    with d.server.client() as http:
        answer = http.get("/api/ready")
    assert answer.status_code == 503, answer.text
    checks = answer.json()["checks"]
    assert checks["database"]["ok"] and checks["hub"]["ok"] and not checks["executor"]["ok"]
    assert "Connection refused" in checks["executor"]["reason"]  # the test's server: metrics are public
