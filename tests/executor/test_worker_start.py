"""`nbrelay worker` refuses to start, clearly, where it could not work: no broker, or shared folders it cannot
write (workers and web nodes share the workspace and the reports folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def worker(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NBRELAY_")}
    return subprocess.run(
        [sys.executable, "-m", "nbrelay", "worker", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_worker_without_a_broker_says_which_setting_is_missing(tmp_path: Path) -> None:
    done = worker({"NBRELAY_DATA_DIR": str(tmp_path), "NBRELAY_BROKER_URL": "sql://"})
    assert done.returncode != 0
    assert "NBRELAY_CELERY_BROKER_URL" in done.stderr and "NBRELAY_BROKER_URL=redis://" in done.stderr


def test_a_worker_that_cannot_write_the_reports_folder_fails_at_start(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the reports folder should be")
    env = {
        "NBRELAY_DATA_DIR": str(tmp_path / "data"),
        "NBRELAY_WORKSPACE": str(tmp_path / "workspace"),
        "NBRELAY_REPORTS_DIR": str(blocked / "reports"),
        "NBRELAY_BROKER_URL": "redis://127.0.0.1:6379/0?prefix=nbrelay-test-unused",
    }
    done = worker(env)
    assert done.returncode != 0
    assert f"cannot write the reports folder {blocked / 'reports'}" in done.stderr
    assert "NBRELAY_REPORTS_DIR" in done.stderr
