"""WebSocket protocol v1 against a real server: resume without loss, epochs, slow consumers, limits."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect


def recv(ws: ClientConnection, timeout_s: float = 10) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout_s))


@contextmanager
def open_session(
    live: Any, stream: str = "user:local", since: str | None = None, **kw: Any
) -> Iterator[ClientConnection]:
    """Connect, read welcome and snapshot, subscribe; the pong proves the subscription is in place."""
    with connect(live.ws_url, **kw) as ws:
        assert recv(ws)["op"] == "welcome"
        assert recv(ws)["op"] == "snapshot"
        request: dict[str, Any] = {"op": "subscribe", "stream": stream}
        if since:
            request["since"] = since
        ws.send(json.dumps(request))
        ws.send('{"op":"ping"}')
        yield ws


def read_events(ws: ClientConnection, count: int, timeout_s: float = 20) -> tuple[list[dict[str, Any]], list[Any]]:
    """`count` events, and the other messages seen meanwhile."""
    events, others = [], []
    deadline = time.monotonic() + timeout_s
    while len(events) < count:
        message = recv(ws, max(0.1, deadline - time.monotonic()))
        (events if message["op"] == "event" else others).append(message)
    return events, others


def test_welcome_snapshot_and_ping(live: Any) -> None:
    server = live()
    with connect(server.ws_url) as ws:
        welcome = recv(ws)
        assert welcome["op"] == "welcome" and welcome["user"] == "local" and welcome["heartbeat_s"] == 25
        assert set(welcome["streams"]) == {"user:local", "broadcast"}
        assert recv(ws) == {"op": "snapshot", "jobs": []}
        ws.send('{"op":"ping"}')
        assert recv(ws) == {"op": "pong"}


def test_cut_off_during_1000_events_resumes_exactly(live: Any) -> None:
    server = live(history_size=2000)
    with open_session(server) as ws:
        assert recv(ws) == {"op": "pong"}
        for i in range(300):
            server.publish("user:local", n=i)
        first, _ = read_events(ws, 300)
    # cut off
    for i in range(300, 1000):
        server.publish("user:local", n=i)
    with open_session(server, since=first[-1]["id"]) as again:
        rest, others = read_events(again, 700)
        for i in range(1000, 1010):  # live events after the resume, no duplicates in between
            server.publish("user:local", n=i)
        live_events, _ = read_events(again, 10)
    assert {"op": "recovered", "stream": "user:local", "recovered": True, "position": rest[-1]["id"]} in others
    received = [e["data"]["n"] for e in first + rest + live_events]
    assert received == list(range(1010))
    offsets = [e["offset"] for e in first + rest + live_events]
    assert offsets == list(range(offsets[0], offsets[0] + 1010))


def test_resume_older_than_history_is_not_recovered(live: Any) -> None:
    server = live(history_size=50)
    with open_session(server) as ws:
        recv(ws)
        server.publish("user:local", n=0)
        (first,), _ = read_events(ws, 1)
    for i in range(200):
        server.publish("user:local", n=i)
    with open_session(server, since=first["id"]) as ws:
        message = recv(ws)
        while message["op"] != "recovered":
            message = recv(ws)
        assert message["recovered"] is False
        assert message["position"].endswith(":201")
        # The client re-reads state over REST; live events continue from the new position.
        server.publish("user:local", n=999)
        events, _ = read_events(ws, 1)
        assert events[0]["data"]["n"] == 999


def test_resume_across_a_restart_is_exact_with_durable_history(live: Any) -> None:
    server = live()  # the default hub keeps its history in the job database
    with open_session(server) as ws:
        recv(ws)
        server.publish("user:local", n=1)
        (seen,), _ = read_events(ws, 1)
    server.publish("user:local", n=2)
    server.stop()
    restarted = live()
    restarted.publish("user:local", n=3)
    with open_session(restarted, since=seen["id"]) as ws:
        events, others = read_events(ws, 2)
    assert [e["data"]["n"] for e in events] == [2, 3]
    assert any(m.get("op") == "recovered" and m["recovered"] is True for m in others)
    assert events[0]["epoch"] == seen["epoch"]


def test_epoch_change_after_restart_is_detected(live: Any) -> None:
    server = live(broker_url="memory://")  # history lives in the process: a restart loses it
    with open_session(server) as ws:
        recv(ws)
        server.publish("user:local", n=1)
        (old,), _ = read_events(ws, 1)
    server.stop()
    restarted = live(broker_url="memory://")
    with open_session(restarted, since=old["id"]) as ws:
        message = recv(ws)
        while message["op"] != "recovered":
            message = recv(ws)
    assert message["recovered"] is False
    assert message["position"].split(":")[0] != old["epoch"]


def rss_kib() -> int:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_subscriber_that_never_reads_is_closed_with_4008_and_memory_stays_bounded(live: Any) -> None:
    server = live(subscriber_queue_size=64, history_size=100, broker_url="memory://")
    # max_queue=1 and a small read limit: this client stops reading from its socket almost at once.
    with open_session(server, max_queue=1, max_size=2**16) as ws:
        payload = "x" * 4096
        before = rss_kib()
        for i in range(20_000):  # 80 MB of events for a reader that never reads
            server.publish("user:local", kind="job.output", text=payload, n=i)
        grown_mib = (rss_kib() - before) / 1024
        assert grown_mib < 40, f"server memory grew by {grown_mib:.0f} MiB for one stalled client"
        # Now read: what was buffered arrives, then the close frame with 4008.
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4008
    assert server.call(_connections(server)) == 0


async def _connections(server: Any) -> int:
    return len(server.app.state.push.connections)


def test_foreign_origin_is_refused_at_the_handshake(live: Any) -> None:
    server = live()
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws_url, origin="http://evil.example")  # type: ignore[arg-type]
    assert refused.value.response.status_code == 403
    with connect(server.ws_url, origin=f"http://127.0.0.1:{server.port}") as ws:  # type: ignore[arg-type]
        assert recv(ws)["op"] == "welcome"


def test_allowed_origins_setting(live: Any) -> None:
    server = live(allowed_origins=["https://app.example.com"])
    with connect(server.ws_url, origin="https://app.example.com") as ws:  # type: ignore[arg-type]
        assert recv(ws)["op"] == "welcome"
    with pytest.raises(InvalidStatus):
        connect(server.ws_url, origin=f"http://127.0.0.1:{server.port}")  # type: ignore[arg-type]


def test_silent_client_is_closed_with_4012(live: Any) -> None:
    server = live(client_idle_timeout_s=1)
    with connect(server.ws_url) as ws:
        recv(ws)
        recv(ws)
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4012
    assert time.monotonic() - started < 6


def test_flooding_client_is_closed_with_4013(live: Any) -> None:
    server = live()
    with connect(server.ws_url) as ws:
        recv(ws)
        recv(ws)
        for _ in range(200):
            try:
                ws.send('{"op":"ping"}')
            except ConnectionClosed:
                break
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4013


def test_errors_for_bad_subscriptions(live: Any) -> None:
    server = live()
    with connect(server.ws_url) as ws:
        recv(ws)
        recv(ws)
        ws.send('{"op":"subscribe","stream":"job:424242"}')
        message = recv(ws)
        assert message["op"] == "error" and message["code"] == "forbidden" and message["stream"] == "job:424242"
        ws.send("hello")
        assert recv(ws)["code"] == "bad_json"


def test_metrics_count_connections_and_events(live: Any) -> None:
    import httpx

    server = live()
    with open_session(server) as ws:
        recv(ws)
        server.publish("user:local", n=1)
        read_events(ws, 1)
        text = httpx.get(f"{server.url}/metrics").text
        assert 'nbrelay_connections{transport="ws"} 1.0' in text
        assert 'nbrelay_events_sent_total{transport="ws"} 1.0' in text
        # The hub saw the event delivered to this node's subscriber, and how long it took.
        lag_count = re.search(r"^nbrelay_hub_lag_seconds_count (\S+)$", text, re.MULTILINE)
        assert lag_count is not None and float(lag_count.group(1)) >= 1
        for figure in ("nbrelay_queue_depth", "nbrelay_jobs_running", "nbrelay_slots", "nbrelay_requeues_total"):
            assert re.search(rf"^{figure} \d", text, re.MULTILINE), figure


def test_clients_hear_4001_when_the_server_stops(live: Any) -> None:
    server = live()
    with connect(server.ws_url) as ws:
        recv(ws)
        recv(ws)
        server.stop()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
