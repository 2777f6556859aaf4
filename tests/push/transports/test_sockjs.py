"""The SockJS server (protocol 0.3.3) over a real uvicorn: every transport, the URL scheme, headers, and the edge
cases (one receiver per session, timeouts, streaming limit, payload and callback errors, close frames, origins)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from nbrelay.auth import hash_token, new_token
from tests.conftest import NOTEBOOKS
from tests.live import LiveServer
from tests.push.transports.sockjs_client import (
    LEGACY,
    V1,
    FrameStream,
    eventually,
    messages,
    next_message,
    server_session,
    session_url,
)

NO_CACHE = "no-store, no-cache, must-revalidate, max-age=0"
JAVASCRIPT = "application/javascript; charset=UTF-8"
HEARTBEAT = '["HeartBeat:2026-11-21 10:00:00"]'


def is_type(msg_type: str) -> Any:
    return lambda message: isinstance(message, dict) and message.get("msgType") == msg_type


def finish_a_job(server: LiveServer, job: int) -> None:
    """A terminal job event, as the job service publishes it (the legacy envelope turns it into "2")."""
    server.publish("user:local", kind="job.failed", job=job, notebook="x" * 500, state="failed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the module: a small streaming limit, JSESSIONID cookies, an iframe page."""
    root = tmp_path_factory.mktemp("sockjs")
    shutil.copytree(NOTEBOOKS, root / "workspace")
    server = LiveServer(
        root / "workspace",
        root / "data",
        sockjs_response_limit_bytes=4096,
        sockjs_cookie_needed=True,
        sockjs_client_url="/e2e/sockjs.min.js",
        broker_url="memory://",
    ).start()
    yield server
    server.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def session_stream(response: httpx.Response, content_type: str) -> FrameStream:
    """A receiving response's frames, after checking it is one: its content type, never cached."""
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == NO_CACHE
    return FrameStream(response)


def xhr_stream(response: httpx.Response) -> FrameStream:
    """An xhr_streaming response read past its 2 KiB prelude."""
    stream = session_stream(response, JAVASCRIPT)
    assert stream.read(2049) == "h" * 2048 + "\n"
    return stream


def ws_url(server: LiveServer, path: str) -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


# --- static URLs -----------------------------------------------------------------------------------------------


def test_greeting_info_and_preflight(server: LiveServer, http: httpx.Client) -> None:
    base = server.url + LEGACY
    greeting = http.get(base + "/")
    assert greeting.text == "Welcome to SockJS!\n"
    assert greeting.headers["content-type"] == "text/plain; charset=UTF-8"
    first, second = http.get(base + "/info"), http.get(base + "/info")
    info = first.json()
    assert info["websocket"] is True and info["origins"] == ["*:*"] and info["cookie_needed"] is True
    assert info["entropy"] != second.json()["entropy"] and 0 <= info["entropy"] < 2**32
    assert first.headers["content-type"] == "application/json; charset=UTF-8"
    assert first.headers["cache-control"] == NO_CACHE and "set-cookie" not in first.headers
    assert first.headers["access-control-allow-origin"] == "*"
    assert first.headers["access-control-allow-credentials"] == "true"
    own = {"Origin": server.url, "Access-Control-Request-Headers": "a, b"}
    for path, methods in (("/info", "OPTIONS, GET"), ("/a/a/xhr", "OPTIONS, POST"), ("/a/a/xhr_send", "OPTIONS, POST")):
        answer = http.options(base + path, headers=own)
        assert answer.status_code == 204 and not answer.content
        assert answer.headers["access-control-allow-methods"] == methods
        assert answer.headers["access-control-allow-origin"] == server.url
        assert answer.headers["access-control-allow-headers"] == "a, b"
        assert "public" in answer.headers["cache-control"] and "max-age=31536000" in answer.headers["cache-control"]
        assert answer.headers["expires"] and int(answer.headers["access-control-max-age"]) > 1_000_000


def test_iframe_page_is_cached_with_an_etag(server: LiveServer, http: httpx.Client) -> None:
    base = server.url + LEGACY
    for suffix in ("/iframe.html", "/iframe-a.html", "/iframe-0.1.2.html?t=1234", "/iframe-1.6.1-dirty.2.html"):
        page = http.get(base + suffix)
        assert page.status_code == 200, suffix
        assert page.headers["content-type"] == "text/html; charset=UTF-8"
        assert "max-age=31536000" in page.headers["cache-control"] and page.headers["expires"]
        assert page.headers["etag"] and "last-modified" not in page.headers and "set-cookie" not in page.headers
        assert '<script src="/e2e/sockjs.min.js"></script>' in page.text
        assert "SockJS.bootstrap_iframe()" in page.text
    etag = http.get(base + "/iframe.html").headers["etag"]
    cached = http.get(base + "/iframe.html", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and not cached.content and "content-type" not in cached.headers
    for suffix in ("/iframe.htm", "/iframe", "/IFRAME.HTML", "/iframe.xml", "/iframe-/.html"):
        assert http.get(base + suffix).status_code == 404, suffix


def test_session_urls_and_websocket_over_http(server: LiveServer, http: httpx.Client) -> None:
    base = server.url + LEGACY
    for suffix in ("/a./a/xhr", "/a/a./xhr", "/a/a/b/xhr", "/a/a/unknown", "/a/a"):
        assert http.post(base + suffix).status_code == 404, suffix
    assert http.post(base + "/_/_/xhr").text == "o\n"
    plain = http.get(base + "/0/0/websocket")
    assert plain.status_code == 400 and 'Can "Upgrade" only to "WebSocket".' in plain.text
    closing = http.get(base + "/0/0/websocket", headers={"Upgrade": "WebSocket", "Connection": "close"})
    assert closing.status_code == 400 and '"Connection" must be "Upgrade".' in closing.text
    posted = http.post(base + "/0/0/websocket")
    assert posted.status_code == 405 and posted.headers["allow"] == "GET" and "content-type" not in posted.headers
    assert http.get(base + "/a/a/xhr").status_code == 405


# --- transports ------------------------------------------------------------------------------------------------


def test_xhr_polling_session(server: LiveServer, http: httpx.Client) -> None:
    url, _ = session_url(server)
    opened = http.post(url + "/xhr?loginName=tester")
    assert opened.status_code == 200 and opened.text == "o\n"
    assert opened.headers["content-type"] == JAVASCRIPT
    assert opened.headers["cache-control"] == NO_CACHE
    assert opened.headers["access-control-allow-origin"] == "*"
    assert opened.headers["set-cookie"].lower() == "jsessionid=dummy; path=/"
    unfinished = messages(http.post(url + "/xhr").text.rstrip("\n"))
    assert unfinished[0]["msgType"] == "1" and unfinished[0]["success"] is True
    sent = http.post(url + "/xhr_send", content=HEARTBEAT, headers={"Cookie": "JSESSIONID=abcdef"})
    assert sent.status_code == 204 and not sent.content
    assert sent.headers["content-type"] == "text/plain; charset=UTF-8"
    assert sent.headers["set-cookie"].lower() == "jsessionid=abcdef; path=/"
    assert next_message(lambda: http.post(url + "/xhr").text.rstrip("\n"), is_type("0"))["msg"] == "HeartBeat"
    http.post(url + "/xhr_send", content='["ping"]')
    assert next_message(lambda: http.post(url + "/xhr").text.rstrip("\n"), lambda m: m == "pong")


def test_xhr_send_errors_and_unknown_sessions(server: LiveServer, http: httpx.Client) -> None:
    url, _ = session_url(server)
    assert http.post(url + "/xhr_send", content=HEARTBEAT).status_code == 404
    assert http.post(url + "/xhr").text == "o\n"
    for body, error in (("", "Payload expected."), ('["x', "Broken JSON encoding."), ('{"a": 1}', "Payload expected.")):
        answer = http.post(url + "/xhr_send", content=body)
        assert answer.status_code == 500 and error in answer.text, body
    assert http.post(url + "/xhr_send", content=HEARTBEAT).status_code == 204


def test_a_sender_gone_mid_body_is_no_server_error(
    server: LiveServer, http: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    """An xhr_send whose client goes before the body is whole (a connection cut, as in tests/chaos) raised
    Starlette's ClientDisconnect out of the route: an unhandled error, logged with its traceback, 13 in a soak run."""
    url, _ = session_url(server)
    assert http.post(url + "/xhr").text == "o\n"
    path = url.removeprefix(server.url) + "/xhr_send"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as raw:
        raw.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n[".encode())
        raw.shutdown(socket.SHUT_WR)  # the rest of the body never comes
        raw.recv(4096)  # whatever the server answers, once it has handled the cut request (an error logs first)
    assert http.post(url + "/xhr_send", content=HEARTBEAT).status_code == 204  # the session goes on
    assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]


def test_xhr_streaming_and_the_response_limit(server: LiveServer, http: httpx.Client) -> None:
    url, _ = session_url(server)
    with http.stream("POST", url + "/xhr_streaming?loginName=tester") as response:
        stream = xhr_stream(response)
        assert stream.read_until("\n") == "o"
        opening: list[str] = []  # every frame up to the heartbeat reply

        def read() -> str | None:
            frame = stream.read_until("\n")
            opening.append(frame or "")
            return frame

        assert next_message(read, is_type("1"))
        http.post(url + "/xhr_send", content=HEARTBEAT)
        assert next_message(read, is_type("0"))
        for job in range(12):  # ~7 KiB of messages: over the 4 KiB limit
            finish_a_job(server, job)
        sizes, finished = [], []
        while (frame := stream.read_until("\n")) is not None:
            sizes.append(len(frame) + 1)
            finished += [m["data"]["id"] for m in messages(frame) if is_type("2")(m)]
        # Ended by the server, on the first frame that took everything after the prelude past 4096 bytes.
        total = len("o\n") + sum(len(frame) + 1 for frame in opening) + sum(sizes)
        assert stream.ended and finished and total >= 4096 and total - sizes[-1] < 4096
    # The session goes on in a new request: no "o" again, the rest of the messages in order.
    with http.stream("POST", url + "/xhr_streaming") as response:
        stream = xhr_stream(response)
        while len(finished) < 12:
            frame = stream.read_until("\n")
            assert frame is not None and frame != "o"
            finished += [m["data"]["id"] for m in messages(frame) if is_type("2")(m)]
    assert finished == list(range(12))


def test_one_receiver_per_session(server: LiveServer, http: httpx.Client) -> None:
    url, _ = session_url(server)
    with http.stream("POST", url + "/xhr_streaming") as response:
        stream = xhr_stream(response)
        assert stream.read_until("\n") == "o"
        second = http.post(url + "/xhr_streaming")
        assert second.text == "h" * 2048 + "\n" + 'c[2010,"Another connection still open"]\n'
        assert http.post(url + "/xhr").text == 'c[2010,"Another connection still open"]\n'
        assert http.get(url + "/jsonp?c=x").text == 'x("c[2010,\\"Another connection still open\\"]");\r\n'
    # The receiver went away mid-stream: what it had in flight is lost, so the session ends.
    interrupted = 'c[1002,"Connection interrupted"]\n'
    eventually(lambda: http.post(url + "/xhr").text == interrupted, "the interrupted session's close frame")
    assert http.post(url + "/xhr").text == interrupted  # served again until the session is forgotten


def test_eventsource(server: LiveServer, http: httpx.Client) -> None:
    url, _ = session_url(server)
    with http.stream("GET", url + "/eventsource") as response:
        stream = session_stream(response, "text/event-stream; charset=UTF-8")
        assert stream.read(2) == "\r\n"
        assert stream.read_until("\r\n\r\n") == "data: o"
        read = lambda: (stream.read_until("\r\n\r\n") or "").removeprefix("data: ")  # noqa: E731
        assert next_message(read, is_type("1"))
        finish_a_job(server, 41)
        assert next_message(read, is_type("2"))["data"]["id"] == 41


def test_htmlfile(server: LiveServer, http: httpx.Client) -> None:
    url, _ = session_url(server)
    assert http.get(url + "/htmlfile").status_code == 500
    with http.stream("GET", url + "/htmlfile?c=%63allback") as response:
        stream = session_stream(response, "text/html; charset=UTF-8")
        prelude = stream.read_until("\r\n\r\n")
        assert prelude is not None and len(prelude) > 1024
        assert prelude.strip().startswith("<!doctype html>") and "var c = parent.callback;" in prelude
        assert stream.read_until("\r\n") == '<script>\np("o");\n</script>'

        def read() -> str:
            script = stream.read_until("\r\n") or ""
            return str(json.loads(script.removeprefix("<script>\np(").removesuffix(");\n</script>")))

        assert next_message(read, is_type("1"))


def test_htmlfile_frames_cannot_end_their_script(server: LiveServer, http: httpx.Client) -> None:
    """A notebook writes a job's error text: '</script>' in it ended the frame's script, and the rest ran as markup
    on the service's origin (found from outside: an alert fired in Chromium). It is escaped now, and the page may
    load nothing."""
    url, _ = session_url(server)
    markup = "</SCRIPT><img src=x onerror=alert(1)><!-- & -->"
    with http.stream("GET", url + "/htmlfile?c=callback") as response:
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "script-src 'unsafe-inline'" in policy
        stream = session_stream(response, "text/html; charset=UTF-8")
        stream.read_until("\r\n\r\n")
        scripts: list[str] = []

        def read() -> str:
            script = stream.read_until("\r\n") or ""
            scripts.append(script)
            return str(json.loads(script.removeprefix("<script>\np(").removesuffix(");\n</script>")))

        assert next_message(read, is_type("1"))
        server.publish("user:local", kind="job.failed", job=43, notebook=markup, state="failed")
        finished = next_message(read, is_type("2"))
    assert markup in json.dumps(finished, ensure_ascii=False)  # the text arrives as it was
    for script in scripts:
        body = script.removeprefix("<script>\n").removesuffix("\n</script>")
        assert not {"<", ">", "&"} & set(body), script  # nothing in a frame that HTML reads


def test_jsonp_polling_and_callback_checks(server: LiveServer, http: httpx.Client) -> None:
    url, _ = session_url(server)
    missing = http.get(url + "/jsonp")
    assert missing.status_code == 500 and '"callback" parameter required' in missing.text
    for bad in ("alert(1)", "x;y", "a%20b", "<script>"):
        answer = http.get(url + "/jsonp", params={"c": bad})
        assert answer.status_code == 500 and 'invalid "callback" parameter' in answer.text, bad
    opened = http.get(url + "/jsonp?c=%63allback")
    assert opened.text == 'callback("o");\r\n'
    assert opened.headers["content-type"] == JAVASCRIPT
    assert opened.headers["cache-control"] == NO_CACHE

    def poll() -> str:
        text = http.get(url + "/jsonp?c=x").text
        return str(json.loads(text.removeprefix("x(").removesuffix(");\r\n")))

    assert next_message(poll, is_type("1"))
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    sent = http.post(url + "/jsonp_send", data={"d": HEARTBEAT})
    assert sent.status_code == 200 and sent.text == "ok"
    assert sent.headers["content-type"] == "text/plain; charset=UTF-8" and sent.headers["cache-control"] == NO_CACHE
    assert next_message(poll, is_type("0"))
    for body, error in (("", "Payload expected."), ("d=", "Payload expected."), ("p=p", "Payload expected.")):
        answer = http.post(url + "/jsonp_send", content=body, headers=form)
        assert answer.status_code == 500 and error in answer.text, body
    broken = http.post(url + "/jsonp_send", content="d=%5B%22x", headers=form)
    assert broken.status_code == 500 and "Broken JSON encoding." in broken.text
    assert http.post(url + "/jsonp_send", content='["ping"]', headers={"Content-Type": "text/plain"}).text == "ok"
    assert next_message(poll, lambda m: m == "pong")


def test_framed_and_raw_websocket(server: LiveServer) -> None:
    _, session_id = session_url(server)
    path = f"{LEGACY}/000/{session_id}/websocket?loginName=tester"
    with connect(ws_url(server, path)) as first, connect(ws_url(server, path)) as second:
        for ws in (first, second):  # WebSocket sessions may share an id: each socket is its own session
            assert ws.recv(timeout=30) == "o"
            assert next_message(lambda ws=ws: str(ws.recv(timeout=30)), is_type("1"))
        first.send("")  # empty frames are ignored
        first.send(HEARTBEAT)
        assert next_message(lambda: str(first.recv(timeout=30)), is_type("0"))
        first.send('"ping"')  # a single JSON string is a message too
        assert next_message(lambda: str(first.recv(timeout=30)), lambda m: m == "pong")
        finish_a_job(server, 7)
        for ws in (first, second):
            assert next_message(lambda ws=ws: str(ws.recv(timeout=30)), is_type("2"))["data"]["id"] == 7
        second.send('["a')  # broken JSON ends the connection, with a close frame first
        assert next_message_or_close(second) == 'c[1002,"Broken framing"]'
        with pytest.raises(ConnectionClosed):
            second.recv(timeout=30)
    with connect(ws_url(server, f"{LEGACY}/websocket?loginName=tester")) as raw:  # no framing at all
        assert json.loads(raw.recv(timeout=30))["msgType"] == "1"
        raw.send("HeartBeat:1")
        assert json.loads(raw.recv(timeout=30))["msgType"] == "0"


def next_message_or_close(ws: Any) -> str:
    while True:
        frame = str(ws.recv(timeout=30))
        if frame.startswith("c"):
            return frame


def test_foreign_origin_is_refused(server: LiveServer, http: httpx.Client) -> None:
    url, session_id = session_url(server)
    evil = {"Origin": "http://evil.example"}
    assert http.get(server.url + LEGACY + "/info", headers=evil).status_code == 403
    assert http.options(url + "/xhr", headers=evil).status_code == 403
    assert http.post(url + "/xhr", headers=evil).status_code == 403
    assert http.get(url + "/eventsource", headers=evil).status_code == 403
    assert server_session(server, session_id) is None
    for path in (f"{LEGACY}/000/{session_id}/websocket", f"{LEGACY}/websocket"):
        with pytest.raises(InvalidStatus) as refused:
            connect(ws_url(server, path), origin="http://evil.example")  # type: ignore[arg-type]
        assert refused.value.response.status_code == 403
    assert http.post(url + "/xhr", headers={"Origin": server.url}).text == "o\n"


def test_protocol_v1_over_xhr_streaming(server: LiveServer, http: httpx.Client) -> None:
    url, _ = session_url(server, V1)
    with http.stream("POST", url + "/xhr_streaming") as response:
        stream = xhr_stream(response)
        assert stream.read_until("\n") == "o"
        read = lambda: stream.read_until("\n")  # noqa: E731
        welcome = next_message(read, lambda m: m.get("op") == "welcome")
        assert welcome["protocol"] == 1 and welcome["user"] == "local"
        assert next_message(read, lambda m: m.get("op") == "snapshot")["jobs"] == []
        subscribe = json.dumps({"op": "subscribe", "stream": "user:local"})
        http.post(url + "/xhr_send", content=json.dumps([subscribe, json.dumps({"op": "ping"})]))
        assert next_message(read, lambda m: m.get("op") == "pong")
        server.publish("user:local", kind="job.queued", job=3, notebook="a.ipynb", state="queued")
        event = next_message(read, lambda m: m.get("op") == "event")
        assert event["type"] == "job.queued" and event["data"]["job"] == 3


# --- servers of their own --------------------------------------------------------------------------------------


def test_heartbeat_frames(live: Any, http: httpx.Client) -> None:
    server = live(heartbeat_s=1.0)
    url, _ = session_url(server)
    with http.stream("POST", url + "/xhr_streaming") as response:
        stream = xhr_stream(response)
        assert stream.read_until("\n") == "o"
        frames = iter(lambda: stream.read_until("\n"), None)
        assert "h" in frames  # after a quiet heartbeat_s
    url, _ = session_url(server)
    assert http.post(url + "/xhr").text == "o\n"
    polls = iter(lambda: http.post(url + "/xhr").text, None)
    assert "h\n" in polls  # the unfinished list, then a poll that waited heartbeat_s for nothing


def test_close_frames_for_refused_users(live: Any, http: httpx.Client) -> None:
    server = live(auth_mode="token")
    alice, bob = new_token(), new_token()
    server.call(server.app.state.jobs.store.add_token("alice", hash_token(alice)))
    server.call(server.app.state.jobs.store.add_token("bob", hash_token(bob)))
    for query, close in (
        ("loginName=alice", 'c[4500,"unauthorized: log in, or pass ?token="]\n'),
        (f"loginName=bob&token={alice}", 'c[4503,"loginName is not the logged-in user"]\n'),
    ):
        url, _ = session_url(server)
        assert http.post(f"{url}/xhr?{query}").text == "o\n"
        assert http.post(f"{url}/xhr?{query}").text == close
        assert http.post(f"{url}/xhr?{query}").text == close  # until the session is forgotten
    url, _ = session_url(server)
    assert http.post(f"{url}/xhr?token={alice}").text == "o\n"
    assert messages(http.post(f"{url}/xhr?token={alice}").text.rstrip())[0]["msgType"] == "1"
    # The session id alone is not enough: another user (or nobody) cannot read or write the session.
    for query in (f"token={bob}", ""):
        assert http.post(f"{url}/xhr?{query}").status_code == 404
        assert http.post(f"{url}/xhr_send?{query}", content=HEARTBEAT).status_code == 404
    assert http.post(f"{url}/xhr_send?token={alice}", content=HEARTBEAT).status_code == 204


def test_session_times_out_without_a_receiver(live: Any, http: httpx.Client) -> None:
    server = live(sockjs_disconnect_delay_s=0.5)
    url, session_id = session_url(server)
    assert http.post(url + "/xhr").text == "o\n"
    session = server_session(server, session_id)
    assert session is not None and session.task is not None
    eventually(lambda: http.post(url + "/xhr_send", content=HEARTBEAT).status_code == 404, "the session to expire")
    eventually(session.task.done, "the connection to end")  # the app heard the disconnect and left the hub
    assert http.post(url + "/xhr").text == "o\n"  # the same id now opens a new session


def test_a_stopping_server_says_goodbye_with_4001(live: Any, http: httpx.Client) -> None:
    server = live()
    url, _ = session_url(server)
    with http.stream("POST", url + "/xhr_streaming") as response:
        stream = xhr_stream(response)
        assert stream.read_until("\n") == "o"
        stopping = threading.Thread(target=server.stop)
        stopping.start()
        frames = list(iter(lambda: stream.read_until("\n"), None))
        assert frames[-1] == 'c[4001,"server restarting: reconnect and resume"]'
    stopping.join()
