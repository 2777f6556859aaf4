"""Server-sent events against a real server: resume by Last-Event-ID, heartbeats, origin, permissions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from tests.push.transports.sse_client import frames


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
            if len(events_of(found)) >= count:
                break
    return found


def events_of(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The event frames (an id, no event name: the welcome and snapshot frames carry an id too)."""
    return [f for f in found if "id" in f and "event" not in f]


def test_welcome_snapshot_then_events(live: Any) -> None:
    server = live()

    def publish_soon() -> None:
        time.sleep(0.5)
        for i in range(3):
            server.publish("user:local", n=i)

    found = collect(server, 3, on_welcome=threading.Thread(target=publish_soon).start)
    named = [f.get("event") for f in found if "data" in f]
    assert named[:2] == ["welcome", "snapshot"]
    events = [f for f in found if "id" in f and "event" not in f]
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
    first = [f for f in collect(server, 300, on_welcome=thread.start) if "id" in f and "event" not in f]
    stop.set()
    thread.join(60)
    rest_frames = collect(server, 700, headers={"Last-Event-ID": first[-1]["id"]})
    recovered = [f for f in rest_frames if f.get("event") == "recovered"]
    assert recovered and recovered[0]["data"]["recovered"] is True
    rest = [f for f in rest_frames if "id" in f and "event" not in f]
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
    # A browser cut off before the next event resumes from where the stream stands, not from the stale id again.
    assert f"user:local={epoch}:101" in recovered["id"].split(",")
    assert [f["data"]["data"]["n"] for f in found if "id" in f and "event" not in f] == [101]


def read_until(stream: Iterator[dict[str, Any]], wanted: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    found = []
    for frame in stream:
        found.append(frame)
        if wanted(frame):
            return found
    raise AssertionError(f"the stream ended first: {found}")


def is_event(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: "event" not in frame and frame.get("data", {}).get("data", {}).get("n") == n


def test_last_event_id_resumes_a_stream_that_had_no_event_yet(live: Any) -> None:
    """A browser reconnects with the last `id:` it read. Read after an event of the user's stream, that id must
    hold the broadcast stream's position too, though no broadcast event came yet: what broadcast while the
    connection was down arrives after the reconnect (the chaos test lost such events: the id named only the
    streams that had an event)."""
    server = live()
    with httpx.stream("GET", f"{server.url}/sse", timeout=30) as response:
        stream = frames(response)
        read_until(stream, lambda frame: frame.get("event") == "welcome")
        server.publish("user:local", n=0)
        last_id = read_until(stream, is_event(0))[-1]["id"]
    server.publish("broadcast", n=1)  # while the browser is away
    with httpx.stream("GET", f"{server.url}/sse", headers={"Last-Event-ID": last_id}, timeout=30) as response:
        stream = frames(response)
        read_until(stream, lambda frame: frame.get("event") == "welcome")
        server.publish("user:local", n=2)
        found = read_until(stream, is_event(2))
    assert [f["data"]["data"]["n"] for f in found if "id" in f and "event" not in f] == [1, 2]


def test_the_welcome_has_an_id_so_a_cut_before_the_first_event_resumes(live: Any) -> None:
    """A connection cut after its welcome and before any event: the browser's Last-Event-ID is the welcome's id,
    and what was published meanwhile arrives after the reconnect."""
    server = live()
    server.publish("broadcast", n=-1)  # history from before the connection: not sent again
    with httpx.stream("GET", f"{server.url}/sse", timeout=30) as response:
        welcome = read_until(frames(response), lambda frame: frame.get("event") == "welcome")[-1]
    positions = welcome["data"]["streams"]
    assert welcome["id"] == ",".join(f"{s}={p}" for s, p in sorted(positions.items()))
    server.publish("user:local", n=0)
    server.publish("broadcast", n=1)
    with httpx.stream("GET", f"{server.url}/sse", headers={"Last-Event-ID": welcome["id"]}, timeout=30) as response:
        stream = frames(response)
        read_until(stream, lambda frame: frame.get("event") == "welcome")
        server.publish("user:local", n=2)
        found = read_until(stream, is_event(2))
    missed = [f["data"]["data"]["n"] for f in found if "id" in f and "event" not in f]
    assert sorted(missed) == [0, 1, 2] and missed[-1] == 2  # order is kept per stream, not across streams


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
    none = httpx.get(f"{server.url}/sse?streams=,,,")
    assert none.status_code == 400 and none.json()["error"]["code"] == "bad_stream"
    missing = httpx.get(f"{server.url}/sse?streams=job:987654")
    assert missing.status_code == 403
