"""Auth modes and isolation over REST, WebSocket and SSE: tokens, session cookies, a trusted proxy header."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.live import bearer, make_token


def test_token_mode_isolates_users(live: Any) -> None:
    server = live(auth_mode="token")
    alice, bob, root = make_token(server, "alice"), make_token(server, "bob"), make_token(server, "root", admin=True)
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.get("/api/jobs").status_code == 401
    assert http.get("/api/jobs", headers=bearer("nbr_wrong")).status_code == 401
    # In token mode a user runs notebooks from their own folder (users/<name>/) or the shared one.
    outside = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}, headers=bearer(alice))
    assert outside.status_code == 404
    notebook = (server.settings.workspace / "tiny.ipynb").read_bytes()
    put = http.put("/api/contents/users/alice/tiny.ipynb", content=notebook, headers=bearer(alice))
    assert put.status_code == 201, put.text
    job = http.post("/api/jobs", json={"notebook": "users/alice/tiny.ipynb"}, headers=bearer(alice)).json()
    assert job["owner"] == "alice"
    # Bob sees nothing of Alice's: not the job, its report, its notebook, nor its stream.
    for path in (f"/api/jobs/{job['id']}", f"/api/jobs/{job['id']}/report", f"/api/jobs/{job['id']}/notebook"):
        answer = http.get(path, headers=bearer(bob))
        assert answer.status_code == 404, path
    assert http.post(f"/api/jobs/{job['id']}/cancel", headers=bearer(bob)).status_code == 404
    assert http.get("/api/jobs", headers=bearer(bob)).json()["total"] == 0
    assert http.get("/api/jobs", headers=bearer(alice)).json()["total"] == 1
    assert http.get("/api/jobs", headers=bearer(root)).json()["total"] == 1  # admins see all
    sse = http.get(f"/sse?streams=job:{job['id']}&token={bob}")
    assert sse.status_code == 403
    assert http.get(f"/sse?streams=user:alice&token={bob}").status_code == 403
    with connect(f"{server.ws_url}?token={bob}") as ws:
        assert json.loads(ws.recv(timeout=10))["user"] == "bob"
        assert json.loads(ws.recv(timeout=10)) == {"op": "snapshot", "jobs": []}
        for stream in (f"job:{job['id']}", "user:alice"):
            ws.send(json.dumps({"op": "subscribe", "stream": stream}))
            refused = json.loads(ws.recv(timeout=10))
            assert refused["op"] == "error" and refused["code"] == "forbidden" and refused["stream"] == stream
    with connect(f"{server.ws_url}?token={alice}") as ws:
        json.loads(ws.recv(timeout=10))
        snapshot = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"op": "subscribe", "stream": f"job:{job['id']}"}))
        ws.send('{"op":"ping"}')
        assert json.loads(ws.recv(timeout=10)) == {"op": "pong"}
    assert all(j["owner"] == "alice" for j in snapshot["jobs"])


def test_websocket_without_credentials_is_closed_with_4500(live: Any) -> None:
    server = live(auth_mode="token")
    with connect(server.ws_url) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500


def test_token_for_cookie_login(live: Any) -> None:
    server = live(auth_mode="token")
    alice = make_token(server, "alice")
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.post("/api/session", json={"token": "nbr_nope"}).status_code == 401
    login = http.post("/api/session", json={"token": alice})
    assert login.status_code == 200 and login.json()["user"] == "alice"
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # plain http
    # Behind the TLS proxy (a trusted peer saying https), the cookie is Secure (found from outside: it was not).
    proxied = httpx.post(
        f"{server.url}/api/session", json={"token": alice}, headers={"X-Forwarded-Proto": "https"}, timeout=30
    )
    assert proxied.status_code == 200 and "; secure" in proxied.headers["set-cookie"].lower()
    assert http.get("/api/session").json()["user"] == "alice"  # the cookie jar carries it now
    cookie_header = f"nbrelay_session={http.cookies['nbrelay_session']}"
    with connect(server.ws_url, additional_headers={"Cookie": cookie_header}) as ws:
        assert json.loads(ws.recv(timeout=10))["user"] == "alice"
    tampered = http.cookies["nbrelay_session"][:-2] + "xx"
    http.cookies.set("nbrelay_session", tampered)
    assert http.get("/api/session").status_code == 401
    # A write with the cookie from a foreign page is refused whatever the cookie says.
    evil = httpx.post(
        f"{server.url}/api/jobs", json={"notebook": "tiny.ipynb"}, headers={"Origin": "http://evil.example"}
    )
    assert evil.status_code == 403


def test_revoking_a_token_ends_its_sessions(live: Any) -> None:
    """Found from outside: a session cookie outlived the token it was traded for by 14 days (REST, WebSocket,
    SSE), and kept the admin flag of a token since revoked and made again without it."""
    server = live(auth_mode="token")
    carol, boss = make_token(server, "carol"), make_token(server, "boss", admin=True)
    sessions = {}
    for name, token in (("carol", carol), ("boss", boss)):
        login = httpx.post(f"{server.url}/api/session", json={"token": token}, timeout=30)
        assert login.status_code == 200, login.text
        sessions[name] = {"nbrelay_session": login.cookies["nbrelay_session"]}
    assert httpx.get(f"{server.url}/api/session", cookies=sessions["boss"]).json()["admin"] is True
    store, auth = server.app.state.jobs.store, server.app.state.auth
    server.call(store.delete_tokens("carol"))  # as `nbrelay token revoke carol` does
    server.call(store.delete_tokens("boss"))
    make_token(server, "boss")  # made again, without --admin
    auth.forget_tokens()  # what 30 s of the token cache would do
    assert httpx.get(f"{server.url}/api/jobs", cookies=sessions["carol"]).status_code == 401
    assert httpx.get(f"{server.url}/sse", cookies=sessions["carol"]).status_code == 401
    cookie = f"nbrelay_session={sessions['carol']['nbrelay_session']}"
    with (
        pytest.raises(ConnectionClosed) as closed,
        connect(server.ws_url, additional_headers={"Cookie": cookie}) as ws,
    ):
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500
    # The old boss session was traded for the revoked token: it ends too, admin or not.
    assert httpx.get(f"{server.url}/api/session", cookies=sessions["boss"]).status_code == 401


def test_revoking_a_token_closes_the_connections_already_open(live: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found from outside: a WebSocket and an SSE stream opened before `nbrelay token revoke` went on delivering
    the user's events for good (62 s and 92 s seen); only new handshakes were refused."""
    monkeypatch.setattr("nbrelay.push.service._SIGN_IN_CHECK_S", 0.2)  # checked every 5 s in service
    server = live(auth_mode="token")
    dave, erin = make_token(server, "dave"), make_token(server, "erin")
    login = httpx.post(f"{server.url}/api/session", json={"token": dave}, timeout=30)
    cookie = f"nbrelay_session={login.cookies['nbrelay_session']}"
    with (
        connect(server.ws_url, additional_headers={"Cookie": cookie}) as by_cookie,
        connect(f"{server.ws_url}?token={dave}") as by_token,
        connect(f"{server.ws_url}?token={erin}") as other,
        httpx.stream("GET", f"{server.url}/sse", headers={"Cookie": cookie}, timeout=30) as sse,
    ):
        assert sse.status_code == 200
        for ws in (by_cookie, by_token, other):
            assert json.loads(ws.recv(timeout=10))["op"] == "welcome"
        store, auth = server.app.state.jobs.store, server.app.state.auth
        server.call(store.delete_tokens("dave"))  # as `nbrelay token revoke dave` does
        auth.forget_tokens()  # what the token cache's 25 s would do
        for ws in (by_cookie, by_token):
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4500
        closing = [line for line in sse.iter_lines() if line.startswith("data:") and '"code"' in line]
        assert json.loads(closing[-1].removeprefix("data:"))["code"] == 4500  # and the stream ended
        other.ping().wait(5)  # erin's token stands: her connection too
        server.call(store.delete_tokens("erin"))


def test_header_mode_trusts_only_configured_proxies(live: Any) -> None:
    trusted = live(auth_mode="header", trusted_proxies=["127.0.0.1"], admin_users=["boss"])
    me = httpx.get(f"{trusted.url}/api/session", headers={"X-Forwarded-User": "carol"})
    assert me.status_code == 200 and me.json() == {"user": "carol", "admin": False, "auth_mode": "header"}
    boss = httpx.get(f"{trusted.url}/api/session", headers={"X-Forwarded-User": "boss"})
    assert boss.json()["admin"] is True
    assert httpx.get(f"{trusted.url}/api/session").status_code == 401
    untrusted = live(auth_mode="header", trusted_proxies=["10.9.9.9"])
    spoofed = httpx.get(f"{untrusted.url}/api/session", headers={"X-Forwarded-User": "carol"})
    assert spoofed.status_code == 401


def test_header_mode_trusts_the_tcp_peer_never_x_forwarded_for(live: Any) -> None:
    """The proxy's address decides, not what X-Forwarded-For says: an SSO proxy on 127.0.0.1 that forwards a
    browser's address is trusted, and a client that names a trusted proxy in X-Forwarded-For is not."""
    behind_proxy = live(auth_mode="header", trusted_proxies=["127.0.0.1"])
    forwarded = {"X-Forwarded-User": "carol", "X-Forwarded-For": "203.0.113.9"}
    me = httpx.get(f"{behind_proxy.url}/api/session", headers=forwarded)
    assert me.status_code == 200 and me.json()["user"] == "carol"
    elsewhere = live(auth_mode="header", trusted_proxies=["10.9.9.9"])
    spoofed = {"X-Forwarded-User": "carol", "X-Forwarded-For": "10.9.9.9"}
    assert httpx.get(f"{elsewhere.url}/api/session", headers=spoofed).status_code == 401


@pytest.mark.parametrize(
    ("auth_mode", "public", "anonymous", "user", "admin"),
    [
        ("token", None, 401, 403, 200),  # closed by default outside auth mode none
        ("token", True, 200, 200, 200),
        ("none", None, 200, 200, 200),
    ],
)
def test_metrics_need_an_admin_unless_made_public(
    live: Any, auth_mode: str, public: bool | None, anonymous: int, user: int, admin: int
) -> None:
    server = live(auth_mode=auth_mode, metrics_public=public)
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.get("/metrics").status_code == anonymous
    if auth_mode == "token":
        assert http.get("/metrics", headers=bearer(make_token(server, "alice"))).status_code == user
        answer = http.get("/metrics", headers=bearer(make_token(server, "root", admin=True)))
        assert answer.status_code == admin and "nbrelay_connections" in answer.text
