"""`nbrelay worker` refuses to start, clearly, where it could not work: no broker, or shared folders that are not
there or that it cannot write (workers and web nodes share the workspace and the reports folder). It creates no
folder: one missing is most often a share not mounted, and a folder made in its place hid that."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nbrelay.config import Settings


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


# Never connected to either: a worker whose settings or folders are wrong stops before it reaches them.
UNUSED_DATABASE = "postgresql://nbrelay@127.0.0.1:1/unused"


def test_a_worker_without_a_broker_says_which_setting_is_missing(tmp_path: Path) -> None:
    done = worker(
        {"NBRELAY_DATA_DIR": str(tmp_path), "NBRELAY_BROKER_URL": "sql://", "NBRELAY_DATABASE_URL": UNUSED_DATABASE}
    )
    assert done.returncode != 0
    assert "NBRELAY_CELERY_BROKER_URL" in done.stderr and "NBRELAY_BROKER_URL=redis://" in done.stderr


UNUSED_BROKER = "redis://127.0.0.1:6379/0?prefix=nbrelay-test-unused"


def folders(tmp_path: Path, **wrong: Path) -> dict[str, str]:
    """The settings of a worker whose shared folders exist, but for those given as `wrong`."""
    chosen = {"workspace": tmp_path / "shared" / "workspace", "reports": tmp_path / "shared" / "reports"}
    for folder in chosen.values():
        folder.mkdir(parents=True)
    chosen |= wrong
    return {
        "NBRELAY_DATA_DIR": str(tmp_path / "data"),
        "NBRELAY_WORKSPACE": str(chosen["workspace"]),
        "NBRELAY_REPORTS_DIR": str(chosen["reports"]),
        "NBRELAY_BROKER_URL": UNUSED_BROKER,
        "NBRELAY_DATABASE_URL": UNUSED_DATABASE,
    }


@pytest.mark.parametrize(("which", "what", "setting"), [
    ("workspace", "workspace", "NBRELAY_WORKSPACE"),
    ("reports", "reports folder", "NBRELAY_REPORTS_DIR"),
])  # fmt: skip
def test_a_worker_refuses_a_shared_folder_that_is_not_there_and_makes_none(
    tmp_path: Path, which: str, what: str, setting: str
) -> None:
    unmounted = tmp_path / "mnt" / "nbrelay"  # a share that is not mounted: its folders are not there
    missing = unmounted / which
    done = worker(folders(tmp_path, **{which: missing}))
    assert done.returncode != 0
    assert f"the {what} {missing} does not exist" in done.stderr
    assert setting in done.stderr
    assert not unmounted.exists()  # nothing made in the share's place


def test_a_worker_refuses_a_file_where_a_shared_folder_should_be(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the reports folder should be")
    done = worker(folders(tmp_path, reports=blocked))
    assert done.returncode != 0
    assert f"the reports folder {blocked} is not a folder" in done.stderr
    assert "NBRELAY_REPORTS_DIR" in done.stderr


def test_a_worker_without_its_reports_setting_says_the_default_is_not_shared(tmp_path: Path) -> None:
    env = folders(tmp_path)
    del env["NBRELAY_REPORTS_DIR"]
    done = worker(env)
    assert done.returncode != 0
    assert f"the reports folder {tmp_path / 'data' / 'reports'} does not exist" in done.stderr
    assert "NBRELAY_REPORTS_DIR is not set" in done.stderr


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder that exists and that this process cannot write: one without write permission, or, as root (whom
    permissions do not stop), sysfs, where nobody can create a file."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/sys/kernel").is_dir():
        return Path("/sys/kernel")
    pytest.skip("running as root, and no sysfs to stand for a folder nobody can write")


def test_a_worker_that_cannot_write_the_reports_folder_fails_at_start(tmp_path: Path) -> None:
    blocked = unwritable_folder(tmp_path)
    done = worker(folders(tmp_path, reports=blocked))
    assert done.returncode != 0
    assert f"cannot write the reports folder {blocked}" in done.stderr
    assert "NBRELAY_REPORTS_DIR" in done.stderr


async def test_a_store_that_hangs_on_renewal_stops_the_runs_before_the_lease_ends(tmp_path: Path) -> None:
    """Found from outside: with PostgreSQL's packets dropped (no refusal), the renewal waited for good, the fence
    that acts on failures never did, and the run went on past its lease beside the next attempt."""
    from nbrelay.executor.worker_host import WorkerHost

    class HangingStore:
        async def renew_leases(self, worker: str, job_ids: object, *, lease_s: float) -> dict[int, bool]:
            await asyncio.Event().wait()  # the connection hangs
            return {}

    settings = Settings(workspace=tmp_path, data_dir=tmp_path / "data", lease_timeout_s=2)
    host = WorkerHost(settings)
    stopped: list[tuple[int, float]] = []

    async def cancel(job_id: int) -> None:
        stopped.append((job_id, time.monotonic()))

    host.store = HangingStore()  # type: ignore[assignment]
    host.recorder = object()  # type: ignore[assignment]  (only a lost lease would reach it)
    host.pool.cancel = cancel  # type: ignore[method-assign]
    host._ends[5] = asyncio.get_running_loop().create_future()
    started = time.monotonic()
    renewing = asyncio.create_task(host._renew_forever())
    try:
        while not stopped and time.monotonic() - started < 10:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    finally:
        renewing.cancel()
        host.loop.close()
    assert stopped and stopped[0][0] == 5
    assert stopped[0][1] - started < settings.lease_timeout_s  # before a reaper could give the job to another
