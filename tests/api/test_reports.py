"""The report history over HTTP against a real in-process server: list, filter, delete, isolation, retention at start.

Reports are made by writing finished jobs straight into the server's store with report files on disk (no kernels),
except the end-to-end test, which runs a real notebook.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbrelay.models import Job, JobState, transition, utcnow
from nbrelay.store import NewJob
from nbrelay.store.base import JobStore
from nbrelay.store.sql import SqlJobStore
from tests.live import LiveServer, bearer, make_token

HTML = b"<html><body>report</body></html>"
IPYNB = b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}'


async def add_report(
    store: JobStore,
    reports_dir: Path,
    *,
    owner: str = "local",
    notebook: str = "tiny.ipynb",
    finished_at: datetime | None = None,
    state: JobState = JobState.SUCCEEDED,
) -> Job:
    """A finished job with its report files under reports_dir/<id>/, as the job service leaves one."""
    finished_at = finished_at or utcnow()
    job = await store.add_job(NewJob(owner=owner, notebook=notebook, kernel_name="python3", parameters={"n": 1}))
    running = transition(job, JobState.RUNNING, at=finished_at - timedelta(seconds=2))
    assert await store.save(running, expect_state=JobState.QUEUED)
    folder = reports_dir / str(job.id)
    folder.mkdir(parents=True)
    stem = notebook.rsplit("/", 1)[-1].removesuffix(".ipynb")
    (folder / f"{stem}.html").write_bytes(HTML)
    (folder / f"{stem}.ipynb").write_bytes(IPYNB)
    done = transition(
        running,
        state,
        at=finished_at,
        report_path=str(folder / f"{stem}.html"),
        output_path=str(folder / f"{stem}.ipynb"),
    )
    assert await store.save(done, expect_state=JobState.RUNNING)
    return done


async def add_running(store: JobStore, owner: str = "local") -> Job:
    job = await store.add_job(NewJob(owner=owner, notebook="tiny.ipynb", kernel_name="python3"))
    running = transition(job, JobState.RUNNING)
    assert await store.save(running, expect_state=JobState.QUEUED)
    return running


def report(server: LiveServer, **kw: Any) -> Job:
    return server.call(add_report(server.app.state.jobs.store, server.settings.reports_dir, **kw))


def test_list_newest_first_filter_page_and_delete(live: Any) -> None:
    server = live()
    a1 = report(server, notebook="tiny.ipynb")
    b1 = report(server, notebook="sub/other.ipynb", state=JobState.FAILED)
    a2 = report(server, notebook="tiny.ipynb")
    running = server.call(add_running(server.app.state.jobs.store))
    http = httpx.Client(base_url=server.url, timeout=30)

    body = http.get("/api/reports").json()
    assert [r["job"] for r in body["reports"]] == [a2.id, b1.id, a1.id]
    assert body["total"] == 3
    first = body["reports"][0]
    assert first["notebook"] == "tiny.ipynb" and first["state"] == "succeeded" and first["owner"] == "local"
    assert first["parameters"] == {"n": 1} and first["duration_s"] == 2.0
    assert first["size_bytes"] == len(HTML) + len(IPYNB)
    assert first["report_url"] == f"/api/jobs/{a2.id}/report"
    assert first["notebook_url"] == f"/api/jobs/{a2.id}/notebook"
    assert first["created_at"].endswith("Z") and first["finished_at"].endswith("Z")
    assert http.get(first["report_url"]).content == HTML

    only = http.get("/api/reports", params={"notebook": "tiny.ipynb"}).json()
    assert [r["job"] for r in only["reports"]] == [a2.id, a1.id] and only["total"] == 2
    assert http.get("/api/reports", params={"notebook": "sub/other.ipynb"}).json()["total"] == 1
    page = http.get("/api/reports", params={"limit": 1, "offset": 1}).json()
    assert [r["job"] for r in page["reports"]] == [b1.id] and page["total"] == 3
    assert http.get("/api/reports", params={"limit": 0}).status_code == 422
    assert http.get("/api/reports", params={"offset": -1}).status_code == 422

    deleted = http.delete(f"/api/reports/{a2.id}")
    assert deleted.status_code == 200 and deleted.json() == {"deleted": a2.id}
    assert not Path(a2.report_path or "").exists() and not Path(a2.output_path or "").exists()
    assert not (server.settings.reports_dir / str(a2.id)).exists()
    gone = http.get(f"/api/jobs/{a2.id}/report")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "no_report"
    assert "its report is not kept: it was deleted" in gone.json()["error"]["message"]  # not "without a report"
    assert http.get(f"/api/jobs/{a2.id}/notebook").status_code == 404
    job = http.get(f"/api/jobs/{a2.id}").json()  # the job stays, without its report
    assert job["state"] == "succeeded" and job["report_url"] is None and job["notebook_url"] is None
    assert [r["job"] for r in http.get("/api/reports").json()["reports"]] == [b1.id, a1.id]
    assert Path(a1.report_path or "").read_bytes() == HTML  # the others are untouched

    again = http.delete(f"/api/reports/{a2.id}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "report_not_found"
    assert http.delete("/api/reports/999999").json()["error"]["code"] == "report_not_found"
    busy = http.delete(f"/api/reports/{running.id}")
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "job_unfinished"
    assert http.delete("/api/reports/nope").status_code == 422


def test_token_mode_isolates_report_history(live: Any) -> None:
    server = live(auth_mode="token")
    alice, bob, root = make_token(server, "alice"), make_token(server, "bob"), make_token(server, "root", admin=True)
    mine = report(server, owner="alice")
    theirs = report(server, owner="bob")
    http = httpx.Client(base_url=server.url, timeout=30)

    assert http.get("/api/reports").status_code == 401
    assert http.delete(f"/api/reports/{mine.id}").status_code == 401
    assert [r["job"] for r in http.get("/api/reports", headers=bearer(alice)).json()["reports"]] == [mine.id]
    assert [r["job"] for r in http.get("/api/reports", headers=bearer(bob)).json()["reports"]] == [theirs.id]
    everyone = http.get("/api/reports", headers=bearer(root)).json()
    assert [r["job"] for r in everyone["reports"]] == [theirs.id, mine.id] and everyone["total"] == 2
    # Bob can neither see nor delete Alice's: it answers like a missing report, and stays.
    refused = http.delete(f"/api/reports/{mine.id}", headers=bearer(bob))
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "report_not_found"
    assert Path(mine.report_path or "").read_bytes() == HTML
    assert http.get(f"/api/jobs/{mine.id}/report", headers=bearer(alice)).status_code == 200
    filtered = http.get("/api/reports", params={"notebook": "tiny.ipynb"}, headers=bearer(bob)).json()
    assert [r["job"] for r in filtered["reports"]] == [theirs.id]

    assert http.delete(f"/api/reports/{mine.id}", headers=bearer(alice)).json() == {"deleted": mine.id}
    assert not (server.settings.reports_dir / str(mine.id)).exists()
    assert http.get(f"/api/jobs/{mine.id}/report", headers=bearer(alice)).status_code == 404
    assert http.delete(f"/api/reports/{theirs.id}", headers=bearer(root)).json() == {"deleted": theirs.id}
    assert not (server.settings.reports_dir / str(theirs.id)).exists()
    assert http.get("/api/reports", headers=bearer(root)).json() == {
        "reports": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }


def test_settings_reach_the_history_and_retention_runs_at_start(tmp_path: Path, live: Any) -> None:
    # Reports left by an earlier run of the server: two old ones, two recent ones.
    data_dir = tmp_path / "data"
    reports_dir = data_dir / "reports"

    async def seed() -> list[Job]:
        store = SqlJobStore(f"sqlite:///{data_dir / 'nbrelay.db'}")
        await store.start()
        try:
            return [
                await add_report(store, reports_dir, finished_at=utcnow() - timedelta(days=days)) for days in (9, 8, 1)
            ] + [await add_report(store, reports_dir, notebook="other.ipynb", finished_at=utcnow())]
        finally:
            await store.close()

    old1, old2, recent, other = asyncio.run(seed())
    server = live(report_keep_last=5, report_keep_days=2.5, retention_interval_s=600)
    history = server.app.state.reports
    assert (history.keep_last, history.keep_days) == (5, 2.5)
    assert history.reports_dir == server.settings.reports_dir

    http = httpx.Client(base_url=server.url, timeout=30)
    deadline = time.monotonic() + 30
    while http.get("/api/reports").json()["total"] != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r["job"] for r in http.get("/api/reports").json()["reports"]] == [other.id, recent.id]
    assert not (reports_dir / str(old1.id)).exists() and not (reports_dir / str(old2.id)).exists()
    assert (reports_dir / str(recent.id)).is_dir() and (reports_dir / str(other.id)).is_dir()


@pytest.mark.kernel
def test_a_real_jobs_report_is_listed_and_deleted(live: Any) -> None:
    server = live()
    http = httpx.Client(base_url=server.url, timeout=30)
    job = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()
    deadline = time.monotonic() + 120
    while (state := http.get(f"/api/jobs/{job['id']}").json()["state"]) in ("queued", "running"):
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.05)
    assert state == "succeeded"
    (entry,) = http.get("/api/reports", params={"notebook": "tiny.ipynb"}).json()["reports"]
    assert entry["job"] == job["id"] and entry["size_bytes"] > 0
    assert http.get(entry["report_url"]).status_code == 200
    stored = server.call(server.app.state.jobs.store.get_job(job["id"]))
    files = [Path(stored.report_path), Path(stored.output_path)]
    assert all(path.is_file() for path in files)

    assert http.delete(f"/api/reports/{job['id']}").json() == {"deleted": job["id"]}
    assert not any(path.exists() for path in files)
    assert not files[0].parent.exists()
    assert http.get(entry["report_url"]).status_code == 404
    assert http.get("/api/reports").json()["total"] == 0
