"""A normal run is quiet: start `nbrelay serve`, run the example notebooks, stop it; its log (warnings of every
category shown, worker processes included) has no warning and no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nbrelay.app import seed_workspace
from tests.conftest import ServerProcess

pytestmark = pytest.mark.kernel

NOISE = re.compile(r"warning\b|traceback|leaked|error\b|exception\b", re.IGNORECASE)  # "UserWarning:", "WARNING |"


def test_a_normal_run_logs_no_warning(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    seed_workspace(workspace)
    # "default" shows each warning once, DeprecationWarning and ResourceWarning included (they are hidden unless
    # asked for); the variable reaches the worker processes too.
    env = {"PYTHONWARNINGS": "default"}
    server = ServerProcess(workspace=workspace, data_dir=tmp_path / "data", workers=1, env=env)
    try:
        server.start(timeout_s=180)
        with server.client() as client:
            for notebook in ("hello.ipynb", "plot.ipynb"):
                job = client.post("/api/jobs", json={"notebook": notebook}).json()
                assert server.wait_for(job["id"], timeout_s=120)["state"] == "succeeded", server.log()
                assert client.get(f"/api/jobs/{job['id']}/report").status_code == 200
    finally:
        server.stop()
    assert server.process is not None
    # A stop by SIGTERM is an exit, with the exit handlers run (not a death by the signal uvicorn raised again).
    assert server.process.returncode == 0, server.log()
    noisy = [line for line in server.log().splitlines() if NOISE.search(line)]
    assert noisy == [], "\n".join(noisy)
