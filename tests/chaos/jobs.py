"""Jobs under stress, at any size: a queue far longer than the worker slots (the cap, none lost, the API's
latency meanwhile), and processes that die (tagged so a test finds every process of its own server).

tests/chaos/test_jobs.py runs these at CI size; bench/soak/long_queue.py the 1,000-job queue for docs/reliability.md.
"""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ServerProcess

FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}


def tagged_processes(tag: str) -> dict[int, str]:
    """{pid: name} of live processes whose environment has NBR_TEST_TAG=tag: a server's workers, zygotes and
    kernels inherit it."""
    found = {}
    needle = f"NBR_TEST_TAG={tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if ") Z " not in stat and needle in (entry / "environ").read_bytes():
                found[int(entry.name)] = stat.split("(", 1)[1].rsplit(")", 1)[0]
        except OSError:
            continue
    return found


@dataclass
class QueueFigures:
    jobs: int
    workers: int
    states: dict[str, int] = field(default_factory=dict)
    lost: int = 0  # submitted, but not found or not finished at the end
    max_running: int = 0  # the most jobs seen running at once (polled)
    polls: int = 0
    list_latency_ms: dict[str, float] = field(default_factory=dict)  # GET /api/jobs while the queue drains
    server_errors: int = 0
    duration_s: float = 0.0
    jobs_per_min: float = 0.0


def queue_run(server: ServerProcess, jobs: int, notebook: str = "tiny.ipynb", timeout_s: float = 1800) -> QueueFigures:
    """Submit `jobs` jobs at once, poll the running count and time GET /api/jobs until every job has ended."""
    figures = QueueFigures(jobs=jobs, workers=server.workers)
    started = time.monotonic()
    with httpx.Client(base_url=server.url, timeout=60) as http:

        def submit(_: int) -> int:
            answer = http.post("/api/jobs", json={"notebook": notebook})
            assert answer.status_code == 202, answer.text
            return int(answer.json()["id"])

        latencies: list[float] = []
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=server.url, timeout=60) as poller:
                while not done.is_set():
                    sent = time.perf_counter()
                    listing = poller.get("/api/jobs", params={"limit": 50})
                    latencies.append(time.perf_counter() - sent)
                    running = poller.get("/api/jobs", params={"state": "running", "limit": 500})
                    for answer in (listing, running):
                        figures.server_errors += answer.status_code >= 500
                    figures.max_running = max(figures.max_running, len(running.json()["jobs"]))
                    figures.polls += 1
                    time.sleep(0.05)

        poller = threading.Thread(target=poll, name="queue-poller", daemon=True)
        poller.start()
        try:
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(submit, range(jobs)))
            deadline = time.monotonic() + timeout_s
            while True:
                states = _states(http, ids)
                if all(state in FINISHED for state in states.values()) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
        finally:
            done.set()
            poller.join(60)
    figures.duration_s = round(time.monotonic() - started, 1)
    figures.jobs_per_min = round(jobs / figures.duration_s * 60, 1)
    for state in states.values():
        figures.states[state] = figures.states.get(state, 0) + 1
    figures.lost = sum(state not in FINISHED for state in states.values()) + (jobs - len(states))
    ordered = sorted(latencies)
    figures.list_latency_ms = {
        "p50": round(statistics.median(ordered) * 1000, 1),
        "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 1),
        "max": round(ordered[-1] * 1000, 1),
    }
    return figures


def _states(http: httpx.Client, ids: list[int]) -> dict[int, str]:
    """Every job's state, read through the listing (pages of 500), as the page reads them."""
    found: dict[int, str] = {}
    wanted = set(ids)
    offset = 0
    while True:
        page: list[dict[str, Any]] = http.get("/api/jobs", params={"limit": 500, "offset": offset}).json()["jobs"]
        found |= {job["id"]: job["state"] for job in page if job["id"] in wanted}
        if len(page) < 500:
            return found
        offset += 500
