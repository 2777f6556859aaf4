"""The Python client's push side against a real server: resume across a restart, follow a job."""

from __future__ import annotations

import threading
import time
from typing import Any

from nbrelay.client import Client


def test_events_resume_exactly_across_a_server_restart(live: Any) -> None:
    server = live()
    received: list[dict[str, Any]] = []
    subscribed = threading.Event()
    client = Client(server.url)

    def consume() -> None:
        for message in client.events(["user:local"], on_subscribed=lambda: subscribed.set() or None):
            received.append(message)
            if message.get("data", {}).get("n") == 59:
                return

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    assert subscribed.wait(30)
    for i in range(30):
        server.publish("user:local", n=i)
    deadline = time.monotonic() + 30
    while len(received) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.stop()  # the client sees 4001 and reconnects with backoff
    restarted = live(port=server.port)
    for i in range(30, 60):
        restarted.publish("user:local", n=i)
    thread.join(60)
    assert not thread.is_alive(), "the client did not get all 60 events within 60 s"
    numbers = [m["data"]["n"] for m in received if m.get("op") == "event"]
    assert numbers == list(range(60))
    assert not [m for m in received if m.get("op") == "recovered"]  # history survived: nothing to re-read


def test_follow_a_job_to_its_end(live: Any) -> None:
    server = live()
    client = Client(server.url)
    job = client.submit("params.ipynb", {"n": 2})
    messages = list(client.follow(job["id"]))
    assert messages[0]["op"] == "state" and messages[0]["job"]["id"] == job["id"]
    kinds = [m.get("type") for m in messages[1:]]
    if messages[0]["job"]["state"] == "succeeded":  # it ended before the subscription: its state says all
        assert kinds == []
    else:  # followed from the queue or a running state to its end, which is the last message
        assert messages[0]["job"]["state"] in ("queued", "running") and kinds[-1] == "job.succeeded", kinds
        assert "job.succeeded" not in kinds[:-1]
    assert client.job(job["id"])["state"] == "succeeded"
