"""A real `nbrelay serve` killed between two attempts of a webhook delivery: the delivery waits in the outbox and
the restarted server sends it, with the same webhook-id, to a receiver that verifies its signature."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.notify.receiver import Receiver, verify


@pytest.mark.kernel
def test_a_server_killed_between_attempts_sends_the_delivery_after_its_restart(
    server_factory: Any, receiver: Receiver
) -> None:
    env = {"NBRELAY_WEBHOOK_ALLOW_PRIVATE": "true", "NBRELAY_NOTIFY_BACKOFF_S": "3", "NBRELAY_NOTIFY_POLL_S": "0.2"}
    server = server_factory(env=env, workers=1)
    http = httpx.Client(base_url=server.url, timeout=30)
    hook = http.post("/api/webhooks", json={"url": receiver.url(), "events": ["job.succeeded"]}).json()
    receiver.answers["/hook"] = [503]
    job = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()
    server.wait_for(job["id"])
    receiver.wait_for("/hook", 1)
    deadline = time.monotonic() + 10
    log: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not (log and log[0]["attempts"] == 1):
        log = http.get(f"/api/webhooks/{hook['id']}/deliveries").json()["deliveries"]
        time.sleep(0.05)
    assert log[0]["state"] == "pending" and log[0]["log"][0]["status_code"] == 503
    server.kill()  # SIGKILL: no clean-up, between the first attempt and the second
    assert len(receiver.at("/hook")) == 1

    server.start()
    first, second = receiver.wait_for("/hook", 2, timeout_s=30)
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == log[0]["message_id"]
    assert verify(hook["secret"], second)["data"]["job_id"] == job["id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        (delivery,) = httpx.get(f"{server.url}/api/webhooks/{hook['id']}/deliveries", timeout=10).json()["deliveries"]
        if delivery["state"] == "delivered":
            break
        time.sleep(0.05)
    assert delivery["state"] == "delivered" and [a["status_code"] for a in delivery["log"]] == [503, 200]
    time.sleep(0.5)
    assert len(receiver.at("/hook")) == 2  # sent once after the restart, not twice
