"""Server-sent events against a real server: resume by Last-Event-ID, heartbeats, origin, permissions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.transports.sse_client import frames


def collect(
    server: Any,
    count: int,
    *,
    headers: dict[str, str] | None = None,
    query: str = "",
    on_welcome: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Open /sse and return frames until `count` events (frames with an id) arrived."""
    found: list[dict[str, Any]] = []
    url = f"{server.url}/sse?streams=user:local{query}"
    with httpx.stream("GET", url, headers=headers or {}, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for frame in frames(response):
            found.append(frame)
            if frame.get("event") == "welcome" and on_welcome is not None:
                on_welcome()
            if sum(1 for f in found if "id" in f) >= count:
                break
    return found


def test_welcome_snapshot_then_events(live: Any) -> None:
    server = live()

    def publish_soon() -> None:
        time.sleep(0.5)
        for i in range(3):
            server.publish("user:local", n=i)

    found = collect(server, 3, on_welcome=threading.Thread(target=publish_soon).start)
    named = [f.get("event") for f in found if "data" in f]
    assert named[:2] == ["welcome", "snapshot"]
    events = [f for f in found if "id" in f]
    assert [e["data"]["data"]["n"] for e in events] == [0, 1, 2]
    assert events[-1]["id"] == f"user:local={events[-1]['data']['id']}"


def test_cut_off_during_1000_events_resumes_exactly_with_last_event_id(live: Any) -> None:
    server = live(history_size=2000)
    stop = threading.Event()

    def publisher() -> None:
        for i in range(1000):
            server.publish("user:local", n=i)
            if i == 400:
                stop.wait(5)  # hold at 400 until the first reader has gone

    thread = threading.Thread(target=publisher)
    first = [f for f in collect(server, 300, on_welcome=thread.start) if "id" in f]
    stop.set()
    thread.join(60)
    rest_frames = collect(server, 700, headers={"Last-Event-ID": first[-1]["id"]})
    recovered = [f for f in rest_frames if f.get("event") == "recovered"]
    assert recovered and recovered[0]["data"]["recovered"] is True
    rest = [f for f in rest_frames if "id" in f]
    numbers = [f["data"]["data"]["n"] for f in first + rest]
    assert numbers == list(range(1000))


def test_resume_too_old_is_not_recovered(live: Any) -> None:
    server = live(history_size=20)
    for i in range(100):
        server.publish("user:local", n=i)
    epoch = server.publish("user:local", n=100).epoch

    def publish_soon() -> None:
        time.sleep(0.5)
        server.publish("user:local", n=101)

    found = collect(
        server, 1, query=f"&last_event_id=user:local={epoch}:3", on_welcome=threading.Thread(target=publish_soon).start
    )
    recovered = next(f for f in found if f.get("event") == "recovered")
    assert recovered["data"] == {
        "op": "recovered",
        "stream": "user:local",
        "recovered": False,
        "position": f"{epoch}:101",
    }
    assert [f["data"]["data"]["n"] for f in found if "id" in f] == [101]


def test_heartbeat_comments(live: Any) -> None:
    server = live(sse_heartbeat_s=0.3)
    with httpx.stream("GET", f"{server.url}/sse", timeout=10) as response:
        comments = 0
        for frame in frames(response):
            comments += "comment" in frame
            if comments >= 2:
                break
    assert comments >= 2


def test_foreign_origin_and_bad_streams_are_refused(live: Any) -> None:
    server = live()
    evil = httpx.get(f"{server.url}/sse", headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "origin_refused"
    bad = httpx.get(f"{server.url}/sse?streams=secrets")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_stream"
    missing = httpx.get(f"{server.url}/sse?streams=job:987654")
    assert missing.status_code == 403
