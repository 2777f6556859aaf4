"""While a job's kernel starts, every client says "starting kernel", not 0/0: the push event, the job over REST and
`nbrelay jobs`. The kernel is a real ipykernel held at a gate until the test has looked (tests/slow_kernel.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nbrelay.client import Client
from tests.conftest import NOTEBOOKS, ServerProcess
from tests.slow_kernel import NAME, GatedKernel

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> GatedKernel:
    return GatedKernel(tmp_path_factory.mktemp("gated-kernel"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, gated: GatedKernel) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("starting-kernel")
    shutil.copytree(NOTEBOOKS, root / "workspace")
    process = ServerProcess(workspace=root / "workspace", data_dir=root / "data", workers=1, env=gated.env).start()
    yield process
    gated.open()  # a kernel still waiting goes, so the server stops at once
    process.stop()


def nbrelay_jobs(server: ServerProcess) -> str:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    command = [sys.executable, "-m", "nbrelay", "jobs", "--server", server.url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, check=False)
    return done.stdout + done.stderr


def test_the_kernel_start_is_a_phase_of_its_own(server: ServerProcess, gated: GatedKernel) -> None:
    def submit() -> dict[str, Any]:
        body = {"notebook": "tiny.ipynb", "parameters": {"x": 41}, "kernel_name": NAME}
        answer = httpx.post(f"{server.url}/api/jobs", json=body, timeout=30)
        assert answer.status_code == 202, answer.text
        return {"op": "submitted", "job": answer.json()}

    gated.close()
    events: list[dict[str, Any]] = []
    seen_while_starting: dict[str, Any] = {}
    stream = Client(server.url).events(on_subscribed=submit)
    job_id = next(stream)["job"]["id"]
    for message in stream:
        if message.get("data", {}).get("job") != job_id:
            continue
        events.append(message)
        if message["type"] == "job.starting":
            seen_while_starting["job"] = httpx.get(f"{server.url}/api/jobs/{job_id}", timeout=30).json()
            seen_while_starting["table"] = nbrelay_jobs(server)
            gated.open()
        if message["type"] == "job.succeeded":
            break

    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["job.queued", "job.starting", "job.started"], kinds
    starting = events[1]["data"]
    assert (starting["state"], starting["phase"], starting["kernel"]) == ("running", "starting_kernel", NAME)
    started = events[2]["data"]
    assert (started["state"], started["total"], started["phase"]) == ("running", 3, "running_cells")
    progress = [
        (e["data"]["cell"], e["data"]["total"], e["data"]["phase"]) for e in events if e["type"] == "job.progress"
    ]
    # tiny.ipynb's parameters cell, the injected parameters (a cell that runs too), then print(x + 1)
    assert progress == [(1, 3, "running_cells"), (2, 3, "running_cells"), (3, 3, "writing_report")]

    job, table = seen_while_starting["job"], seen_while_starting["table"]
    assert (job["state"], job["progress"]) == ("running", {"cell": 0, "total": 0, "phase": "starting_kernel"})
    row = next(line for line in table.splitlines() if line.replace("│", "|").startswith(f"| {job_id} "))
    assert "starting kernel" in row and "0/0" not in row, table
    assert server.wait_for(job_id)["progress"] == {"cell": 3, "total": 3, "phase": None}


def test_the_api_documents_the_numbering(server: ServerProcess) -> None:
    document = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    described = document["paths"]["/api/jobs/{job_id}"]["get"]["description"]
    assert "numbered from 1" in described and "In [n]" in described and "starting_kernel" in described
