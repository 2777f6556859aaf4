"""Jobs when processes die and queues grow (docs/reliability.md): a kernel killed mid-job fails its job with
"kernel died"; the server killed with SIGKILL mid-job leaves no worker, zygote or kernel behind, and its jobs end
"interrupted: server restarted" at the next start; a queue of many jobs all finish under the concurrency cap while
the API answers. Timings are printed as figures, never asserted (the bounds only stop a hang)."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.chaos.jobs import queue_run, tagged_processes
from tests.conftest import NOTEBOOKS, ServerProcess, kernel_processes
from tests.push.transports.sockjs_client import eventually

pytestmark = pytest.mark.kernel

WORKERS = 2
QUEUE_JOBS = 120  # CI size (60 per worker slot); bench/soak/long_queue.py queues 1,000


@pytest.fixture(scope="module")
def tagged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """One server for the module, its processes tagged; no warm kernels, so a running job's kernel is the only one."""
    root = tmp_path_factory.mktemp("chaos-jobs")
    shutil.copytree(NOTEBOOKS, root / "workspace")
    tag = uuid.uuid4().hex
    env = {"NBR_TEST_TAG": tag, "NBRELAY_KERNEL_POOL_SIZE": "0", "NBRELAY_INTERRUPT_GRACE_S": "1"}
    server = ServerProcess(root / "workspace", root / "data", workers=WORKERS, env=env)
    yield server.start(timeout_s=180), tag  # generous: only against a hang, on a shared machine
    server.stop()


def submit(server: ServerProcess, notebook: str, **parameters: Any) -> int:
    answer = httpx.post(f"{server.url}/api/jobs", json={"notebook": notebook, "parameters": parameters}, timeout=30)
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def sleeping(server: ServerProcess, job_id: int) -> None:
    """Until the job is in `time.sleep(seconds)` (code cell 5 of sleep.ipynb with its parameters injected)."""

    def in_sleep() -> bool:
        job = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=30).json()
        return bool(job["state"] == "running" and job["progress"]["cell"] == 4)

    eventually(in_sleep, f"job {job_id} sleeping", timeout_s=120)


def test_a_kernel_killed_mid_job_fails_the_job_kernel_died(tagged: tuple[ServerProcess, str]) -> None:
    server, tag = tagged
    job_id = submit(server, "sleep.ipynb", seconds=300)
    sleeping(server, job_id)
    (kernel,) = kernel_processes(tag)
    os.kill(kernel, signal.SIGKILL)
    killed = time.monotonic()
    job = server.wait_for(job_id, timeout_s=60)  # the bound only stops a hang; the time is a figure
    print(f"kernel SIGKILL -> job {job['state']} in {time.monotonic() - killed:.2f} s")
    assert job["state"] == "failed" and job["error"]["reason"] == "kernel died (signal 9 SIGKILL)", job
    assert job["report_url"], "a failed job has its report"


def test_server_killed_mid_job_leaves_no_process_and_no_running_job(tagged: tuple[ServerProcess, str]) -> None:
    server, tag = tagged
    running = [submit(server, "sleep.ipynb", seconds=300) for _ in range(WORKERS)]
    queued = submit(server, "tiny.ipynb")
    for job_id in running:
        sleeping(server, job_id)
    assert len(kernel_processes(tag)) == WORKERS
    before = tagged_processes(tag)
    server.kill()
    killed = time.monotonic()
    # Workers die with the server (parent-death signal), zygotes and kernels with their worker.
    eventually(lambda: not tagged_processes(tag), f"every process of the killed server gone: {before}", 30)
    print(f"server SIGKILL -> its {len(before)} processes gone in {time.monotonic() - killed:.2f} s")
    server.start(timeout_s=180)
    for job_id in running:
        job = server.wait_for(job_id, timeout_s=30)
        assert job["state"] == "failed" and job["error"]["reason"] == "interrupted: server restarted", job
        assert job["report_url"], job
    assert server.wait_for(queued, timeout_s=120)["state"] == "succeeded"
    with server.client() as http:
        assert http.get("/api/jobs", params={"state": "running"}).json()["jobs"] == []


def test_a_long_queue_all_finish_under_the_cap_and_the_api_answers(tagged: tuple[ServerProcess, str]) -> None:
    server, tag = tagged
    figures = queue_run(server, QUEUE_JOBS, timeout_s=600)
    print(f"queue of {QUEUE_JOBS}: {figures}")
    assert figures.lost == 0 and figures.states == {"succeeded": QUEUE_JOBS}, figures
    assert 0 < figures.max_running <= WORKERS, figures
    assert figures.server_errors == 0 and figures.polls > 10, figures
    assert len(kernel_processes(tag)) == 0, "no kernel left once the queue is empty (no warm pool here)"
