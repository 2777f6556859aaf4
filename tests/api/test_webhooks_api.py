"""Webhooks over HTTP against a real in-process server running real notebooks: signed deliveries that
standardwebhooks verifies, the delivery log, rotate and redeliver, refusals, per-user isolation, and a hanging
receiver that delays neither other endpoints nor push."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any, get_args

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from nbrelay.api.notifications import EndState, WebhookEvent
from nbrelay.client import Client
from nbrelay.notify.payload import EMAIL_STATES, WEBHOOK_EVENTS
from tests.live import bearer, make_token
from tests.notify.receiver import Receiver, verify

PUBLIC = "https://nbrelay.example.com/base"
FAST = {
    "webhook_allow_private": True,
    "notify_backoff_s": 0.05,
    "notify_poll_s": 0.1,
    "public_url": PUBLIC,
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def wait_job(http: httpx.Client, job_id: int, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = http.get(f"/api/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")


def wait_log(http: httpx.Client, hook: int, count: int, timeout_s: float = 20) -> list[dict[str, Any]]:
    """The endpoint's deliveries once `count` are no longer pending."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = http.get(f"/api/webhooks/{hook}/deliveries").json()["deliveries"]
        if len([d for d in found if d["state"] != "pending"]) >= count:
            return found
        time.sleep(0.05)
    raise AssertionError(f"webhook {hook}: fewer than {count} deliveries done")


@pytest.mark.kernel
def test_signed_deliveries_of_a_succeeded_and_a_failed_job(live: Any, receiver: Receiver) -> None:
    server = live(**FAST)
    http = httpx.Client(base_url=server.url, timeout=30)
    answer = http.post("/api/webhooks", json={"url": receiver.url(), "events": ["job.succeeded", "job.failed"]})
    assert answer.status_code == 201, answer.text
    hook = answer.json()
    assert hook["secret"].startswith("whsec_") and answer.headers["location"] == f"/api/webhooks/{hook['id']}"
    listed = http.get("/api/webhooks").json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]
    assert "secret" not in http.get(f"/api/webhooks/{hook['id']}").json()

    ok = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()
    bad = http.post("/api/jobs", json={"notebook": "fail.ipynb"}).json()
    wait_job(http, ok["id"])
    wait_job(http, bad["id"])
    got = receiver.wait_for("/hook", 2)
    payloads = {p["data"]["job_id"]: p for p in (verify(hook["secret"], r) for r in got)}
    assert payloads[ok["id"]]["type"] == "job.succeeded"
    done = payloads[ok["id"]]["data"]
    assert done["state"] == "succeeded" and done["notebook"] == "tiny.ipynb"
    assert done["report_url"] == f"{PUBLIC}/api/jobs/{ok['id']}/report"
    assert done["submitted_at"] and done["started_at"] and done["finished_at"] and done["duration_s"] >= 0
    assert done["failing_cell"] is None and done["error"] is None and done["schedule_id"] is None
    failed = payloads[bad["id"]]["data"]
    assert payloads[bad["id"]]["type"] == "job.failed"
    assert failed["failing_cell"] == 2 and failed["error"] == "ValueError: boom in cell 2"

    log = wait_log(http, hook["id"], 2)
    assert {d["job_id"] for d in log} == {ok["id"], bad["id"]}
    for delivery in log:
        assert delivery["state"] == "delivered" and delivery["attempts"] == 1
        (attempt,) = delivery["log"]
        assert attempt["status_code"] == 200 and attempt["latency_ms"] > 0 and attempt["response_head"] == '{"ok":true}'
    print(f"delivery latency: {[d['log'][0]['latency_ms'] for d in log]} ms")

    # Rotate: the old secret no longer verifies a redelivery, the new one does; the webhook-id stays.
    rotated = http.post(f"/api/webhooks/{hook['id']}/rotate").json()
    assert rotated["secret"] != hook["secret"] and rotated["secret"].startswith("whsec_")
    first = log[0]
    again = http.post(f"/api/webhooks/{hook['id']}/deliveries/{first['id']}/redeliver")
    assert again.status_code == 202 and again.json()["state"] == "pending"
    resent = receiver.wait_for("/hook", 3)[-1]
    assert resent.headers["webhook-id"] == first["message_id"]
    verify(rotated["secret"], resent)
    with pytest.raises(WebhookVerificationError):
        verify(hook["secret"], resent)

    wait_log(http, hook["id"], 2)
    deadline = time.monotonic() + 10
    delivered = 'nbrelay_notify_attempts_total{kind="webhook",state="delivered"} 3.0'
    while delivered not in (figures := http.get("/metrics").text) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delivered in figures and 'nbrelay_notify_latency_seconds_count{kind="webhook"} 3.0' in figures

    assert http.delete(f"/api/webhooks/{hook['id']}").status_code == 204
    assert http.get(f"/api/webhooks/{hook['id']}").status_code == 404
    assert http.get(f"/api/webhooks/{hook['id']}/deliveries").status_code == 404


def test_refusals(live: Any, receiver: Receiver) -> None:
    server = live()  # NBRELAY_WEBHOOK_ALLOW_PRIVATE is false by default
    http = httpx.Client(base_url=server.url, timeout=30)
    private = http.post("/api/webhooks", json={"url": receiver.url(), "events": ["job.failed"]})
    assert private.status_code == 422
    error = private.json()["error"]
    assert error["code"] == "webhook_url_refused" and "loopback" in error["message"]
    assert "NBRELAY_WEBHOOK_ALLOW_PRIVATE" in error["hint"]
    for body, code in (
        ({"url": "http://10.0.0.7/hook"}, "webhook_url_refused"),
        ({"url": "ftp://example.com/hook"}, "webhook_url_refused"),
        ({"url": "http://169.254.169.254/latest"}, "webhook_url_refused"),
        ({"url": "https://93.184.215.14/hook", "events": ["job.progress"]}, "invalid_request"),
        ({"url": "https://93.184.215.14/hook", "events": []}, "invalid_request"),
        ({"url": "https://93.184.215.14/hook", "schedule_id": 4242}, "schedule_not_found"),
    ):
        answer = http.post("/api/webhooks", json=body)
        assert answer.json()["error"]["code"] == code, (body, answer.text)
        assert answer.status_code in (404, 422)
    assert http.get("/api/webhooks").json() == {"webhooks": []}


def test_each_user_sees_only_their_own(live: Any, receiver: Receiver) -> None:
    server = live(auth_mode="token", **FAST)
    alice = httpx.Client(base_url=server.url, headers=bearer(make_token(server, "alice")), timeout=30)
    bob = httpx.Client(base_url=server.url, headers=bearer(make_token(server, "bob")), timeout=30)
    hook = alice.post("/api/webhooks", json={"url": receiver.url(), "events": ["job.failed"]}).json()
    assert httpx.get(f"{server.url}/api/webhooks").status_code == 401
    assert bob.get("/api/webhooks").json() == {"webhooks": []}
    for method, path in (
        ("GET", f"/api/webhooks/{hook['id']}"),
        ("GET", f"/api/webhooks/{hook['id']}/deliveries"),
        ("POST", f"/api/webhooks/{hook['id']}/rotate"),
        ("POST", f"/api/webhooks/{hook['id']}/deliveries/1/redeliver"),
        ("DELETE", f"/api/webhooks/{hook['id']}"),
    ):
        answer = bob.request(method, path)
        assert answer.status_code == 404, (method, path)
        assert answer.json()["error"]["code"] == "webhook_not_found"
    assert alice.get(f"/api/webhooks/{hook['id']}").status_code == 200

    put = alice.put("/api/notify/email", json={"addresses": ["alice@example.com"], "on": ["failed", "succeeded"]})
    assert put.status_code == 200 and put.json()["addresses"] == ["alice@example.com"]
    assert bob.get("/api/notify/email").json()["addresses"] == []
    assert alice.get("/api/notify/email").json()["on"] == ["failed", "succeeded"]
    bad = alice.put("/api/notify/email", json={"addresses": ["not an address"], "on": ["failed"]})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_addresses"
    bad = alice.put("/api/notify/email", json={"addresses": [], "on": ["sometimes"]})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    assert bad.json()["error"]["message"].startswith("on.0: ")


def test_the_documented_events_and_states_are_those_the_outbox_knows() -> None:
    assert get_args(WebhookEvent) == WEBHOOK_EVENTS
    assert get_args(EndState) == EMAIL_STATES


def test_the_api_is_in_the_openapi_document(live: Any) -> None:
    doc = httpx.get(f"{live().url}/openapi.json").json()
    paths = doc["paths"]
    assert set(paths["/api/webhooks"]) == {"get", "post"}
    assert paths["/api/webhooks"]["post"]["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/WebhookWithSecret"
    }
    assert {"401", "404", "422"} <= set(paths["/api/webhooks"]["post"]["responses"])
    assert set(paths["/api/webhooks/{webhook_id}"]) == {"get", "delete"}
    assert "post" in paths["/api/webhooks/{webhook_id}/rotate"]
    assert "get" in paths["/api/webhooks/{webhook_id}/deliveries"]
    assert "post" in paths["/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"]
    assert set(paths["/api/notify/email"]) == {"get", "put"}
    assert "secret" in doc["components"]["schemas"]["WebhookWithSecret"]["properties"]
    assert "secret" not in doc["components"]["schemas"]["WebhookOut"]["properties"]


@pytest.mark.kernel
def test_a_hanging_receiver_delays_neither_other_endpoints_nor_push(live: Any, receiver: Receiver) -> None:
    server = live(**{**FAST, "notify_timeout_s": 30.0})
    http = httpx.Client(base_url=server.url, timeout=30)
    receiver.hang_s["/slow"] = 30
    for path in ("/slow", "/fast"):
        assert http.post("/api/webhooks", json={"url": receiver.url(path), "events": ["job.succeeded"]}).is_success
    arrived: dict[int, float] = {}  # job id -> when its job.succeeded came over push
    subscribed = threading.Event()

    def on_subscribed() -> None:
        subscribed.set()

    def listen() -> None:
        with Client(server.url) as client:
            for event in client.events(["user:local"], on_subscribed=on_subscribed):
                if event.get("type") == "job.succeeded":
                    arrived[event["data"]["job"]] = time.monotonic()
                    if len(arrived) == 2:
                        return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert subscribed.wait(10)
    first = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()
    wait_job(http, first["id"])
    receiver.wait_for("/slow", 1, 10)  # now hanging
    receiver.wait_for("/fast", 1, 5)
    second = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()
    ended = wait_job(http, second["id"])
    finished = time.monotonic()
    receiver.wait_for("/fast", 2, 5)
    listener.join(10)
    assert set(arrived) == {first["id"], second["id"]}
    # The second job's end reached the page at once and its delivery to /fast went out, while /slow still hangs.
    assert arrived[second["id"]] - finished < 1.0
    assert receiver.at("/fast")[1].at - finished < 2.0
    # /slow is sent the second job's end too (its delivery of the first still hangs): it goes out beside /fast's,
    # not necessarily before the check above.
    assert len(receiver.wait_for("/slow", 2, 5)) == 2 and ended["state"] == "succeeded"
