"""The app's start-up helpers."""

from __future__ import annotations

import asyncio
import errno
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbrelay.app import seed_workspace
from tests.conftest import NOTEBOOKS
from tests.live import LiveServer, bearer, make_token


def test_examples_go_where_every_user_sees_them_and_never_into_a_workspace_in_use(tmp_path: Path) -> None:
    """Found from outside: in auth mode token the examples sat at the workspace's top, which only admins see."""
    assert seed_workspace(tmp_path / "ws", into="shared")
    assert (tmp_path / "ws" / "shared" / "tour.ipynb").is_file() and not (tmp_path / "ws" / "tour.ipynb").exists()
    assert seed_workspace(tmp_path / "solo")  # auth mode none: the one user sees the top
    assert (tmp_path / "solo" / "tour.ipynb").is_file()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "mine.ipynb").write_text("{}")
    assert not seed_workspace(tmp_path / "used")
    assert sorted(p.name for p in (tmp_path / "used").iterdir()) == ["mine.ipynb"]


@pytest.mark.parametrize(
    ("refusal", "status", "code"),
    [
        (sqlite3.OperationalError("database or disk is full"), 507, "disk_full"),
        (sqlite3.OperationalError("database is locked"), 503, "unavailable"),
        (OSError(errno.ENOSPC, "No space left on device"), 507, "disk_full"),
    ],
)
def test_a_database_or_disk_that_refuses_is_said_not_a_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: Exception, status: int, code: str
) -> None:
    """Found from outside: a full disk and a locked database answered 500 internal_error to a submit."""
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "tiny.ipynb").write_bytes((NOTEBOOKS / "tiny.ipynb").read_bytes())
    server = LiveServer(tmp_path / "ws", tmp_path / "data").start()
    try:
        store = server.app.state.jobs.store

        async def refuse(*_args: Any, **_kw: Any) -> Any:
            raise refusal

        monkeypatch.setattr(store, "add_job", refuse)
        answer = httpx.post(f"{server.url}/api/jobs", json={"notebook": "tiny.ipynb"}, timeout=30)
        assert answer.status_code == status, answer.text
        assert answer.json()["error"]["code"] == code and str(refusal.args[-1]) in answer.json()["error"]["message"]
        if status == 503:
            assert answer.headers["retry-after"] == "5"
    finally:
        server.stop()


def test_ready_asks_the_database_hub_and_executor_and_says_why_not_to_admins_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/api/health says the process is alive; /api/ready says whether what it needs answers now."""
    (tmp_path / "ws").mkdir()
    server = LiveServer(tmp_path / "ws", tmp_path / "data", auth_mode="token").start()
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        answer = http.get("/api/ready")
        assert answer.status_code == 200, answer.text
        checks = answer.json()["checks"]
        assert sorted(checks) == ["database", "executor", "hub"]
        assert all(check["ok"] and check["ms"] >= 0 for check in checks.values())
        assert http.head("/api/ready").status_code == 200  # load balancers' checks

        async def away() -> None:
            raise OSError(111, "Connection refused")

        probes = server.app.state.readiness.probes
        monkeypatch.setitem(probes, "database", away)
        answer = http.get("/api/ready")
        assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
        assert answer.json()["status"] == "not_ready"
        assert sorted(answer.json()["checks"]["database"]) == ["ms", "ok"]  # no reason for who is not signed in
        assert answer.json()["checks"]["database"]["ok"] is False
        assert answer.json()["checks"]["hub"]["ok"] and answer.json()["checks"]["executor"]["ok"]
        user = http.get("/api/ready", headers=bearer(make_token(server, "alice"))).json()["checks"]["database"]
        assert "reason" not in user  # where the database is, and why it fails: for operators
        admin = http.get("/api/ready", headers=bearer(make_token(server, "root", admin=True))).json()
        assert admin["checks"]["database"]["reason"] == "[Errno 111] Connection refused"

        async def hangs() -> None:
            await asyncio.sleep(1)

        server.app.state.readiness.timeout_s = 0.2
        monkeypatch.setitem(probes, "hub", hangs)
        admin = http.get("/api/ready", headers=bearer(make_token(server, "root2", admin=True))).json()
        hub = admin["checks"]["hub"]
        assert (hub["ok"], hub["reason"]) == (False, "no answer within 0.2 s") and hub["ms"] >= 180
        monkeypatch.undo()
        deadline = time.monotonic() + 10  # once the slow probe, which the next check joins, has ended
        while http.get("/api/ready").status_code != 200:
            assert time.monotonic() < deadline, "not ready again"
            time.sleep(0.1)
        assert http.get("/api/health").json()["status"] == "ok"
    finally:
        server.stop()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_bug_is_answered_500_and_logged_once_with_its_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found from outside: a genuine 500 was logged twice, ours with the request and the server's own."""
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "tiny.ipynb").write_bytes((NOTEBOOKS / "tiny.ipynb").read_bytes())
    server = LiveServer(tmp_path / "ws", tmp_path / "data").start()
    seen = Records()
    loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("nbrelay")]
    for logger in loggers:
        logger.addHandler(seen)
    try:

        async def bug(*_args: Any, **_kw: Any) -> Any:
            raise KeyError("a bug")

        monkeypatch.setattr(server.app.state.jobs.store, "add_job", bug)
        answer = httpx.post(f"{server.url}/api/jobs", json={"notebook": "tiny.ipynb"}, timeout=30)
        assert answer.status_code == 500
        assert answer.json()["error"]["code"] == "internal_error"
        assert answer.headers["x-content-type-options"] == "nosniff"  # it passed the other middlewares
        time.sleep(0.2)  # what the server would log comes after the answer
        assert [r.getMessage() for r in seen.records] == ["unhandled error on POST /api/jobs"]
        assert seen.records[0].exc_info is not None and seen.records[0].exc_info[0] is KeyError
    finally:
        for logger in loggers:
            logger.removeHandler(seen)
        server.stop()
