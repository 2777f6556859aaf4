"""The app's start-up helpers."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbrelay.app import seed_workspace
from tests.conftest import NOTEBOOKS
from tests.live import LiveServer


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
