"""The legacy Spring profile over a real server: heartbeats, the unfinished list on open, finished jobs."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from nbrelay.auth import hash_token, new_token
from nbrelay.push.transports.legacy import answer


def legacy_url(server: Any, query: str = "loginName=anyone") -> str:
    return f"ws://127.0.0.1:{server.port}/websocket?{query}"


def next_envelope(ws: ClientConnection, msg_type: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        text = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
        message = json.loads(text)
        if message.get("msgType") == msg_type:
            return message


def test_heartbeats_are_answered() -> None:
    assert json.loads(answer("HeartBeat:2026-11-21 10:00:00") or "") == {
        "msgType": "0",
        "msg": "HeartBeat",
        "success": True,
        "data": None,
    }
    assert answer("ping") == "pong"
    assert answer("something else") is None


def test_open_heartbeat_and_finished_jobs(live: Any) -> None:
    server = live()
    http = httpx.Client(base_url=server.url, timeout=30)
    running = http.post("/api/jobs", json={"notebook": "sleep.ipynb", "parameters": {"seconds": 3}}).json()
    with connect(legacy_url(server)) as ws:
        unfinished = json.loads(ws.recv(timeout=10))
        assert unfinished["msgType"] == "1" and unfinished["success"] is True
        assert [job["id"] for job in unfinished["data"]] == [running["id"]]
        ws.send("HeartBeat:2026-11-21 10:00:00")
        assert json.loads(ws.recv(timeout=10))["msgType"] == "0"
        ws.send("ping")
        assert ws.recv(timeout=10) == "pong"
        done = next_envelope(ws, "2")
        assert done["success"] is True and done["data"]["id"] == running["id"]
        assert done["data"]["htmlPath"] == f"/api/jobs/{running['id']}/report"
        assert "sleep.ipynb finished" in done["msg"]
        failing = http.post("/api/jobs", json={"notebook": "fail.ipynb"}).json()
        failed = next_envelope(ws, "2")
        assert failed["success"] is False and failed["data"]["id"] == failing["id"]
        assert "ValueError" in failed["msg"] and "boom" in failed["msg"]
    rest = http.get("/api/legacy/unfinished").json()
    assert rest == {"msgType": "1", "msg": "0 unfinished job(s)", "success": True, "data": []}


def test_login_name_is_trusted_only_where_the_auth_mode_allows(live: Any) -> None:
    server = live(auth_mode="token")
    alice = new_token()
    server.call(server.app.state.jobs.store.add_token("alice", hash_token(alice)))
    for query, code in (("loginName=alice", 4500), (f"loginName=bob&token={alice}", 4503)):
        with connect(legacy_url(server, query)) as ws, pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code, query
    with connect(legacy_url(server, f"loginName=alice&token={alice}")) as ws:
        assert json.loads(ws.recv(timeout=10))["msgType"] == "1"


def test_foreign_origin_is_refused(live: Any) -> None:
    server = live()
    with pytest.raises(Exception, match="403"):
        connect(legacy_url(server), origin="http://evil.example")  # type: ignore[arg-type]


def test_a_legacy_client_that_never_reads_is_closed_with_4008(live: Any) -> None:
    server = live(subscriber_queue_size=64, history_size=100, broker_url="memory://")
    with connect(legacy_url(server), max_queue=1, max_size=2**16) as ws:
        assert json.loads(ws.recv(timeout=10))["msgType"] == "1"
        for i in range(5_000):  # finished-job messages for a page that stopped reading
            server.publish("user:local", kind="job.failed", job=i, notebook="x" * 2000, state="failed")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
