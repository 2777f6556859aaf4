"""Two web nodes on one Redis (redis:// hub): a client on one node hears what the other publishes, resumes on
either node without sticky sessions, and a live client (v1 or legacy) learns when Redis lost the history."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.conftest import drop_redis_keys, fresh_redis_url
from tests.push.transports.test_legacy import legacy_url, next_envelope
from tests.push.transports.test_sse import collect, events_of
from tests.push.transports.test_ws import open_session, read_events, recv

pytestmark = pytest.mark.redis


@pytest.fixture
def nodes(live: Any) -> Iterator[tuple[Any, Any, str]]:
    with fresh_redis_url() as broker:
        yield live(broker_url=broker), live(broker_url=broker), broker


def test_a_client_on_node_b_hears_node_a_and_resumes_on_node_a(nodes: tuple[Any, Any, str]) -> None:
    node_a, node_b, _ = nodes
    with open_session(node_b) as ws:
        assert recv(ws) == {"op": "pong"}  # subscribed: node B receives the stream's events from Redis
        published = [node_a.publish("user:local", n=i) for i in range(5)]
        events, _ = read_events(ws, 5)
        assert [e["id"] for e in events] == [e.id for e in published]
    missed = [node_b.publish("user:local", n=i) for i in range(5, 8)]
    with open_session(node_a, since=events[-1]["id"]) as ws:
        resumed, others = read_events(ws, 3)
    assert {"op": "recovered", "stream": "user:local", "recovered": True, "position": missed[-1].id} in others
    assert [e["id"] for e in resumed] == [e.id for e in missed]


def test_sse_resumes_on_the_other_node_by_last_event_id(nodes: tuple[Any, Any, str]) -> None:
    node_a, node_b, _ = nodes

    def publish_soon() -> None:
        time.sleep(0.3)
        for i in range(3):
            node_a.publish("user:local", n=i)

    first = events_of(collect(node_b, 3, on_welcome=threading.Thread(target=publish_soon).start))
    node_a.publish("user:local", n=3)
    node_b.publish("user:local", n=4)
    again = events_of(collect(node_a, 2, headers={"Last-Event-ID": first[-1]["id"]}))
    assert [f["data"]["data"]["n"] for f in first + again] == [0, 1, 2, 3, 4]


def test_a_live_client_learns_that_redis_lost_the_history(nodes: tuple[Any, Any, str]) -> None:
    node_a, node_b, broker = nodes
    with open_session(node_b) as ws:
        assert recv(ws) == {"op": "pong"}
        before = node_a.publish("user:local", n=1)
        read_events(ws, 1)
        drop_redis_keys(broker)  # as Redis restarted empty does
        after = node_a.publish("user:local", n=2)
        events, others = read_events(ws, 1)
    assert after.epoch != before.epoch and events[0]["id"] == after.id
    assert others == [{"op": "recovered", "stream": "user:local", "recovered": False, "position": f"{after.epoch}:0"}]


def test_a_legacy_client_is_sent_its_unfinished_jobs_again_when_redis_lost_the_history(
    nodes: tuple[Any, Any, str],
) -> None:
    node_a, node_b, broker = nodes
    with connect(legacy_url(node_b)) as ws:
        assert json.loads(ws.recv(timeout=10))["msgType"] == "1"  # sent once the subscription is in place
        node_a.publish("user:local", kind="job.failed", job=1, notebook="a.ipynb", state="failed")
        assert next_envelope(ws, "2", timeout_s=10)["data"]["id"] == 1
        drop_redis_keys(broker)
        node_a.publish("user:local", kind="job.failed", job=2, notebook="b.ipynb", state="failed")
        assert json.loads(ws.recv(timeout=10))["msgType"] == "1"  # the Spring envelope's way to say "re-read"
        assert next_envelope(ws, "2", timeout_s=10)["data"]["id"] == 2
