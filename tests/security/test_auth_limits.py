"""Failed token checks are limited per client address: after NBRELAY_AUTH_MAX_FAILURES within
NBRELAY_AUTH_FAILURE_WINDOW_S, that address gets 429 with Retry-After on REST and POST /api/session (push:
unauthorized), whatever token it tries, until the window ends; other addresses and session cookies are not held
back. The address is the peer's, or behind a trusted proxy the one it forwards (X-Forwarded-For).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from nbrelay.auth import FailureLimit
from tests.live import LiveServer, bearer, make_token
from tests.security.conftest import token_server

MAX_FAILURES = 5
WINDOW_S = 4.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    started = token_server(tmp_path_factory, "limits", auth_max_failures=MAX_FAILURES, auth_failure_window_s=WINDOW_S)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def alice(server: LiveServer) -> str:
    return make_token(server, "alice")


def from_address(address: str, token: str | None = None) -> dict[str, str]:
    """Headers of a request the trusted proxy (the peer, 127.0.0.1) forwards from `address`."""
    headers = {"X-Forwarded-For": address}
    return {**headers, **bearer(token)} if token else headers


def fail(http: httpx.Client, address: str, times: int) -> list[int]:
    return [http.get("/api/jobs", headers=from_address(address, "nbr_wrong")).status_code for _ in range(times)]


def assert_limited(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    wait_s = int(answer.headers["retry-after"])
    assert 1 <= wait_s <= WINDOW_S
    assert answer.json()["error"]["code"] == "too_many_failures", answer.text
    message = answer.json()["error"]["message"]
    assert "too many failed sign-ins" in message and f"try again in {wait_s} s" in message, message


def test_failures_past_the_limit_get_429_with_retry_after_until_the_window_ends(server: LiveServer, alice: str) -> None:
    http = httpx.Client(base_url=server.url, timeout=30)
    address = "203.0.113.1"
    assert fail(http, address, MAX_FAILURES) == [401] * MAX_FAILURES  # the failure that fills the window: 401
    assert_limited(http.get("/api/jobs", headers=from_address(address, "nbr_wrong")))
    # Whatever it tries now, even the right token: a guess made during the wait tells nothing.
    assert_limited(http.get("/api/jobs", headers=from_address(address, alice)))
    assert_limited(http.post("/api/session", json={"token": alice}, headers=from_address(address)))
    # Another address is not held back, nor is a session cookie from this one (cookies are signed, not guessed).
    assert http.get("/api/jobs", headers=from_address("203.0.113.2", alice)).status_code == 200
    login = http.post("/api/session", json={"token": alice}, headers=from_address("203.0.113.2"))
    cookie = {"nbrelay_session": login.cookies["nbrelay_session"]}
    answer = httpx.get(f"{server.url}/api/jobs", headers=from_address(address), cookies=cookie, timeout=30)
    assert answer.status_code == 200, answer.text
    time.sleep(WINDOW_S + 0.2)
    assert http.get("/api/jobs", headers=from_address(address, alice)).status_code == 200


def test_log_in_failures_count_and_are_limited(server: LiveServer, alice: str) -> None:
    http = httpx.Client(base_url=server.url, timeout=30)
    address = "203.0.113.3"
    statuses = [
        http.post("/api/session", json={"token": f"nbr_guess{i}"}, headers=from_address(address)).status_code
        for i in range(MAX_FAILURES)
    ]
    assert statuses == [401] * MAX_FAILURES
    assert_limited(http.post("/api/session", json={"token": "nbr_guess"}, headers=from_address(address)))


def test_push_failures_count_and_push_is_refused_while_limited(server: LiveServer, alice: str) -> None:
    """WebSocket and SSE ?token= failures count too; while limited, push answers as to a bad token."""
    address = "203.0.113.4"
    url = server.url
    for _ in range(MAX_FAILURES):
        answer = httpx.get(f"{url}/sse?token=nbr_wrong", headers=from_address(address), timeout=30)
        assert answer.status_code == 401
    http = httpx.Client(base_url=url, timeout=30)
    assert_limited(http.get("/api/jobs", headers=from_address(address, alice)))
    assert httpx.get(f"{url}/sse?token={alice}", headers=from_address(address), timeout=30).status_code == 401
    ws_url = f"{server.ws_url}?token={alice}"
    with connect(ws_url, additional_headers=from_address(address)) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500
    with connect(ws_url, additional_headers=from_address("203.0.113.5")) as ws:
        assert json.loads(ws.recv(timeout=10))["user"] == "alice"


def test_forwarded_addresses_count_only_from_a_trusted_proxy(tmp_path_factory: pytest.TempPathFactory) -> None:
    """From a peer that is not a trusted proxy, X-Forwarded-For is the client's own claim: failures count against
    the peer, so changing the header does not escape the limit."""
    untrusted = token_server(
        tmp_path_factory,
        "untrusted",
        auth_max_failures=MAX_FAILURES,
        auth_failure_window_s=WINDOW_S,
        trusted_proxies=[],
    )
    try:
        token = make_token(untrusted, "alice")
        http = httpx.Client(base_url=untrusted.url, timeout=30)
        statuses = [
            http.get("/api/jobs", headers=from_address(f"198.51.100.{i}", "nbr_wrong")).status_code
            for i in range(MAX_FAILURES)
        ]
        assert statuses == [401] * MAX_FAILURES
        assert_limited(http.get("/api/jobs", headers=from_address("198.51.100.200", token)))
    finally:
        untrusted.stop()


# the limit itself, on a clock of our own ---------------------------------------------------------------------------
def test_a_window_opens_at_the_first_failure_and_ends_after_window_s() -> None:
    limit = FailureLimit(max_failures=3, window_s=10)
    for now in (0, 1, 2):
        assert limit.retry_after_s("a", now) == 0
        limit.failed("a", now)
    assert limit.retry_after_s("a", 2) == 8
    assert limit.retry_after_s("a", 9.5) == 0.5
    assert limit.retry_after_s("a", 10) == 0  # over: the next failure opens a new window
    limit.failed("a", 10)
    assert limit.retry_after_s("a", 10) == 0


def test_failures_of_an_old_window_do_not_add_up() -> None:
    limit = FailureLimit(max_failures=3, window_s=10)
    limit.failed("a", 0)
    limit.failed("a", 1)
    limit.failed("a", 11)  # a new window: 1 failure
    limit.failed("a", 12)
    assert limit.retry_after_s("a", 12) == 0


def test_memory_is_bounded_by_the_addresses_kept() -> None:
    limit = FailureLimit(max_failures=3, window_s=10, max_clients=100)
    for i in range(10_000):
        limit.failed(f"10.0.{i // 256}.{i % 256}", 0)
    assert len(limit._windows) == 100
    for _ in range(3):
        limit.failed("10.0.0.1", 1)  # long forgotten, counted afresh: limited now, and kept as the most recent
    assert limit.retry_after_s("10.0.0.1", 1) == 10
    assert len(limit._windows) == 100


def test_zero_turns_the_limit_off() -> None:
    limit = FailureLimit(max_failures=0, window_s=10)
    for now in range(100):
        limit.failed("a", now / 100)
    assert limit.retry_after_s("a", 1) == 0 and not limit._windows
