"""Hostile frames against every push transport of a real server: each gets the answer docs/protocol.md and
docs/legacy.md give it (an error message, a close code, an HTTP status), and the server serves the next client.

Transports: /ws, SockJS protocol v1 over its websocket and xhr (xhr_send to send, xhr polling to receive), the
legacy WebSocket, and SSE's query and Last-Event-ID. One server for the module; each case ends by checking that
a fresh /ws client of another user is welcomed and answered.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import NOTEBOOKS
from tests.live import LiveServer, make_token

WAIT_S = 10  # a deadline against hanging, never a timing assertion
MESSAGE_LIMIT = 4096  # docs/protocol.md: 4501 over 4 KiB
WS_FRAME_LIMIT = 64 * 1024  # docs/protocol.md: 1009 over 64 KiB on /ws
SOCKJS_SEND_LIMIT = 256 * 1024  # an xhr_send body past this is refused with 413
UVICORN_WS_LIMIT = 16 * 1024 * 1024  # the ASGI WebSockets (legacy, SockJS): uvicorn's ws_max_size
MAX_STREAMS = 64  # per connection
BURST = 60  # messages a client may send at once (then ~20/s)


@dataclass(frozen=True)
class Error:
    code: str


@dataclass(frozen=True)
class Closed:
    code: int


@dataclass
class Setup:
    server: LiveServer
    alice: str
    bob: str
    root: str

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("frames")
    shutil.copytree(NOTEBOOKS, tmp / "workspace")
    server = LiveServer(tmp / "workspace", tmp / "data", auth_mode="token").start()
    yield Setup(server, make_token(server, "alice"), make_token(server, "bob"), make_token(server, "root", admin=True))
    server.stop()


def still_serves(setup: Setup) -> None:
    """Another user's fresh /ws connection is welcomed and its ping answered."""
    with connect(f"ws://127.0.0.1:{setup.port}/ws?token={setup.bob}") as ws:
        assert json.loads(ws.recv(timeout=WAIT_S))["op"] == "welcome"
        assert json.loads(ws.recv(timeout=WAIT_S))["op"] == "snapshot"
        ws.send('{"op": "ping"}')
        assert json.loads(ws.recv(timeout=WAIT_S)) == {"op": "pong"}
    assert httpx.get(f"{setup.server.url}/api/health", timeout=WAIT_S).status_code == 200


# protocol v1 clients: send a frame, read the next answer as a message (dict) or the close ------------------------
class V1Client(Protocol):
    def send(self, frame: str | bytes) -> None: ...
    def send_many(self, texts: list[str | bytes]) -> None: ...
    def answer(self) -> dict[str, Any] | Closed: ...
    def close(self) -> None: ...


class DirectWs:
    """/ws: one message per text frame."""

    def __init__(self, setup: Setup, token: str):
        url = f"ws://127.0.0.1:{setup.port}/ws?token={token}"
        self.ws: ClientConnection = connect(url, max_size=None).__enter__()
        for op in ("welcome", "snapshot"):
            assert json.loads(self.ws.recv(timeout=WAIT_S))["op"] == op

    def send(self, frame: str | bytes) -> None:
        self.send_many([frame])

    def send_many(self, texts: list[str | bytes]) -> None:
        try:
            for text in texts:
                self.ws.send(text)
        except ConnectionClosed:
            pass  # the server closed mid-burst: answer() reads why

    def answer(self) -> dict[str, Any] | Closed:
        try:
            return dict(json.loads(self.ws.recv(timeout=WAIT_S)))
        except ConnectionClosed as closed:
            return Closed(closed.rcvd.code if closed.rcvd else 1006)

    def close(self) -> None:
        self.ws.close()


def sockjs_frames(frame: str) -> list[dict[str, Any] | Closed]:
    """The protocol messages of one SockJS frame: a[…] messages, c[code, reason] a close; o and h carry none."""
    if frame.startswith("a"):
        return [json.loads(text) for text in json.loads(frame[1:])]
    if frame.startswith("c"):
        return [Closed(json.loads(frame[1:])[0])]
    return []


class SockJsWs:
    """SockJS protocol v1 over its websocket transport: messages in JSON-array frames."""

    def __init__(self, setup: Setup, token: str):
        url = f"ws://127.0.0.1:{setup.port}/sockjs/v1/000/{uuid.uuid4().hex}/websocket?token={token}"
        self.ws: ClientConnection = connect(url, max_size=None).__enter__()
        self.queue: list[dict[str, Any] | Closed] = []
        for op in ("welcome", "snapshot"):
            message = self.answer()
            assert isinstance(message, dict) and message["op"] == op, message

    def send(self, frame: str | bytes) -> None:
        self.ws.send(frame if isinstance(frame, bytes) else json.dumps([frame]))

    def send_many(self, texts: list[str | bytes]) -> None:
        self.ws.send(json.dumps(texts))

    def answer(self) -> dict[str, Any] | Closed:
        while not self.queue:
            try:
                self.queue += sockjs_frames(str(self.ws.recv(timeout=WAIT_S)))
            except ConnectionClosed as closed:
                return Closed(closed.rcvd.code if closed.rcvd else 1006)
        return self.queue.pop(0)

    def close(self) -> None:
        self.ws.close()


class SockJsXhr:
    """SockJS protocol v1 over xhr: xhr_send carries client messages, xhr polling brings the answers."""

    def __init__(self, setup: Setup, token: str):
        self.http = httpx.Client(timeout=WAIT_S + 30)
        self.base = f"{setup.server.url}/sockjs/v1/000/{uuid.uuid4().hex}"
        self.token = token
        self.queue: list[dict[str, Any] | Closed] = []
        for op in ("welcome", "snapshot"):
            message = self.answer()
            assert isinstance(message, dict) and message["op"] == op, message

    def send(self, frame: str | bytes) -> None:
        self.post_send(json.dumps([frame]).encode() if isinstance(frame, str) else frame, expect=204)

    def send_many(self, texts: list[str | bytes]) -> None:
        self.post_send(json.dumps(texts).encode(), expect=204)

    def post_send(self, body: bytes, expect: int) -> httpx.Response:
        answer = self.http.post(f"{self.base}/xhr_send?token={self.token}", content=body)
        assert answer.status_code == expect, (answer.status_code, answer.text[:200])
        return answer

    def answer(self) -> dict[str, Any] | Closed:
        while not self.queue:
            polled = self.http.post(f"{self.base}/xhr?token={self.token}")
            assert polled.status_code == 200, polled.text
            self.queue += sockjs_frames(polled.text.strip())
        return self.queue.pop(0)

    def close(self) -> None:
        self.http.close()


V1_TRANSPORTS = {"ws": DirectWs, "sockjs-websocket": SockJsWs, "sockjs-xhr": SockJsXhr}


@pytest.fixture(params=list(V1_TRANSPORTS))
def v1(request: pytest.FixtureRequest, setup: Setup) -> Iterator[Any]:
    """A factory of protocol v1 clients over one transport; the server must serve another client afterwards."""
    opened: list[V1Client] = []

    def make(token: str | None = None) -> V1Client:
        client: V1Client = V1_TRANSPORTS[request.param](setup, token or setup.alice)
        opened.append(client)
        return client

    make.transport = request.param  # type: ignore[attr-defined]
    yield make
    for client in opened:
        client.close()
    still_serves(setup)


def big(size: int) -> str:
    """A ping exactly `size` bytes long."""
    head = '{"op": "ping", "pad": "'
    return head + "x" * (size - len(head) - 2) + '"}'


SINCE = '{"op": "subscribe", "stream": "user:alice", "since": '
# Each message, alone on a fresh connection, and the answer docs/protocol.md gives it.
CORPUS: list[tuple[str, str, Error | Closed]] = [
    ("invalid JSON", "{bad", Error("bad_json")),
    ("plain text", "ping", Error("bad_json")),
    ("truncated", '{"op": "subscribe", "stream": "user:alice"', Error("bad_json")),
    ("a list", '[{"op": "ping"}]', Error("bad_message")),
    ("a string", '"ping"', Error("bad_message")),
    ("a number", "42", Error("bad_message")),
    ("null", "null", Error("bad_message")),
    ("no op", "{}", Error("unknown_op")),
    ("unknown op", '{"op": "shutdown"}', Error("unknown_op")),
    ("op not a string", '{"op": ["ping"]}', Error("unknown_op")),
    ("stream missing", '{"op": "subscribe"}', Error("bad_stream")),
    ("stream a number", '{"op": "subscribe", "stream": 7}', Error("bad_stream")),
    ("stream an object", '{"op": "unsubscribe", "stream": {"job": 7}}', Error("bad_stream")),
    ("stream of no known kind", '{"op": "subscribe", "stream": "users:alice"}', Error("bad_stream")),
    ("job id not a number", '{"op": "subscribe", "stream": "job:1e3"}', Error("bad_stream")),
    ("huge stream name", '{"op": "subscribe", "stream": "user:' + "a" * 3500 + '"}', Error("bad_stream")),
    ("huge job id", '{"op": "subscribe", "stream": "job:' + "9" * 3500 + '"}', Error("bad_stream")),
    ("another user's stream", '{"op": "subscribe", "stream": "user:bob"}', Error("forbidden")),
    ("a job that is not hers", '{"op": "subscribe", "stream": "job:424242"}', Error("forbidden")),
    ("since a number", '{"op": "subscribe", "stream": "user:alice", "since": 42}', Error("bad_since")),
    ("since garbage", '{"op": "subscribe", "stream": "user:alice", "since": "garbage"}', Error("bad_since")),
    ("since no epoch", '{"op": "subscribe", "stream": "user:alice", "since": ":5"}', Error("bad_since")),
    ("since negative", '{"op": "subscribe", "stream": "user:alice", "since": "k3f9:-1"}', Error("bad_since")),
    (
        "since past any offset",
        '{"op": "subscribe", "stream": "user:alice", "since": "k3f9:' + "9" * 30 + '"}',
        Error("bad_since"),
    ),
    (
        "since in other digits",
        '{"op": "subscribe", "stream": "user:alice", "since": "k3f9:\u00b2"}',
        Error("bad_since"),
    ),
    ("message over the limit", big(MESSAGE_LIMIT + 1), Closed(4501)),
]


@pytest.mark.parametrize(("label", "text", "expected"), CORPUS, ids=[case[0] for case in CORPUS])
def test_a_bad_message_gets_its_documented_answer(v1: Any, label: str, text: str, expected: Error | Closed) -> None:
    client = v1()
    client.send(text)
    answer = client.answer()
    if isinstance(expected, Closed):
        assert answer == expected, label
        return
    assert isinstance(answer, dict) and answer["op"] == "error" and answer["code"] == expected.code, (label, answer)
    assert answer["reason"]  # for people: what was expected
    client.send('{"op": "ping"}')  # errors do not close the connection
    assert client.answer() == {"op": "pong"}


def test_a_message_at_the_limit_is_read(v1: Any) -> None:
    client = v1()
    client.send(big(MESSAGE_LIMIT))
    assert client.answer() == {"op": "pong"}


def test_a_since_of_another_epoch_is_an_unrecovered_resume(v1: Any) -> None:
    client = v1()
    client.send('{"op": "subscribe", "stream": "user:alice", "since": "nosuchepoch:42"}')
    answer = client.answer()
    assert isinstance(answer, dict) and answer["op"] == "recovered" and answer["recovered"] is False, answer


def assert_burst_closed(answers: list[dict[str, Any] | Closed]) -> None:
    """Pongs for at most the burst, then 4013."""
    assert answers[-1] == Closed(4013), answers[-3:]
    assert answers[:-1] == [{"op": "pong"}] * (len(answers) - 1) and len(answers) - 1 <= BURST, answers[:3]


def read_until_closed(client: V1Client) -> list[dict[str, Any] | Closed]:
    answers = [client.answer()]
    while not isinstance(answers[-1], Closed) and len(answers) <= BURST + 1:
        answers.append(client.answer())
    return answers


def subscribes(count: int) -> list[str]:
    """Subscribes to `count` distinct streams (jobs that are not the user's: each answered `forbidden`)."""
    return [json.dumps({"op": "subscribe", "stream": f"job:{i}"}) for i in range(1, count + 1)]


def test_ws_burst_of_thousands_is_closed_with_4013(setup: Setup) -> None:
    # Written in one go on a raw socket: a client library may block in send once the server closes mid-burst.
    for burst in (text_frames('{"op": "ping"}', 3000), b"".join(text_frames(text, 1) for text in subscribes(3000))):
        with raw_websocket(setup, f"/ws?token={setup.alice}") as raw:
            raw.sendall(burst)
            texts, code = server_frames(raw)
        assert code == 4013 and len(texts) - 2 <= BURST, (code, texts[-2:])  # after welcome and snapshot
    still_serves(setup)


def test_sockjs_websocket_burst_of_thousands_of_subscribes_is_closed_with_4013(setup: Setup) -> None:
    client = SockJsWs(setup, setup.alice)
    client.send_many(subscribes(3000))
    answers = read_until_closed(client)
    assert answers[-1] == Closed(4013) and len(answers) - 1 <= BURST, answers[-3:]
    assert all(isinstance(a, dict) and a["code"] == "forbidden" for a in answers[:-1]), answers[:3]
    client.close()
    still_serves(setup)


def test_sockjs_websocket_burst_of_thousands_is_closed_with_4013(setup: Setup) -> None:
    client = SockJsWs(setup, setup.alice)
    client.send_many(['{"op": "ping"}'] * 3000)
    assert_burst_closed(read_until_closed(client))
    client.close()
    still_serves(setup)


def test_sockjs_xhr_burst_is_closed_with_4013(setup: Setup) -> None:
    client = SockJsXhr(setup, setup.alice)
    client.send_many(['{"op": "ping"}'] * 200)  # within the session's inbox of 256 unread messages
    assert_burst_closed(read_until_closed(client))
    client.close()
    still_serves(setup)


def test_sockjs_xhr_burst_of_thousands_is_closed_with_4013(setup: Setup) -> None:
    client = SockJsXhr(setup, setup.alice)
    client.send_many(['{"op": "ping"}'] * 3000)
    polled = client.http.post(f"{client.base}/xhr?token={client.token}")
    assert polled.text.startswith("c[4013"), polled.text[:100]
    client.close()


def test_more_streams_than_the_limit_get_too_many_streams(v1: Any, setup: Setup) -> None:
    """An admin may follow any stream: the 65th distinct one is refused, the connection stays (paced under the
    message rate, so the rate limit is not what answers)."""
    client = v1(setup.root)
    subscribes = [json.dumps({"op": "subscribe", "stream": f"user:u{i}"}) for i in range(MAX_STREAMS + 1)]
    client.send_many(subscribes[: BURST - 10])
    time.sleep(1.0)  # ~20 tokens back
    client.send_many([*subscribes[BURST - 10 :], '{"op": "ping"}'])
    answer = client.answer()
    assert isinstance(answer, dict) and answer["code"] == "too_many_streams", answer
    assert answer["stream"] == f"user:u{MAX_STREAMS}"
    assert client.answer() == {"op": "pong"}


# transport-specific frames -----------------------------------------------------------------------------------------
def test_ws_binary_frame_is_closed_with_4501(setup: Setup) -> None:
    client = DirectWs(setup, setup.alice)
    client.send(b"\x00\x01binary")
    assert client.answer() == Closed(4501)
    still_serves(setup)


def test_ws_frame_over_64_kib_is_closed_with_1009(setup: Setup) -> None:
    client = DirectWs(setup, setup.alice)
    client.send(big(WS_FRAME_LIMIT + 1))
    assert client.answer() == Closed(1009)
    still_serves(setup)


def test_ws_frame_between_4_and_64_kib_is_closed_with_4501(setup: Setup) -> None:
    client = DirectWs(setup, setup.alice)
    client.send(big(WS_FRAME_LIMIT))
    assert client.answer() == Closed(4501)
    still_serves(setup)


def raw_websocket(setup: Setup, path: str) -> socket.socket:
    """A WebSocket opened by hand (for frames a client library will not send); the 101 answer read."""
    raw = socket.create_connection(("127.0.0.1", setup.port), timeout=WAIT_S)
    raw.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{setup.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += raw.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return raw


def server_frames(raw: socket.socket) -> tuple[list[str], int | None]:
    """Read server frames until the close frame: the texts before it, and its code (None when the connection
    ends without one)."""
    buffer, texts = b"", []

    def need(size: int) -> bytes:
        nonlocal buffer
        while len(buffer) < size:
            chunk = raw.recv(65536)
            if not chunk:
                raise EOFError
            buffer += chunk
        taken, buffer = buffer[:size], buffer[size:]
        return taken

    try:
        while True:
            opcode, length = need(2)
            length &= 0x7F
            if length >= 126:
                length = int.from_bytes(need(2 if length == 126 else 8), "big")
            payload = need(length)
            if opcode & 0x0F == 0x8:
                return texts, int.from_bytes(payload[:2], "big")
            if opcode & 0x0F == 0x1:
                texts.append(payload.decode())
    except (EOFError, OSError):
        return texts, None


def close_code(raw: socket.socket) -> int | None:
    return server_frames(raw)[1]


def text_frames(text: str, times: int) -> bytes:
    """`times` masked client text frames of `text`, to be written in one go."""
    data = text.encode()
    return (masked_frame_head(0x1, len(data)) + data) * times


def masked_frame_head(opcode: int, length: int) -> bytes:
    """The head of a final, masked client frame of `length` bytes (mask 0: the payload goes as it is)."""
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        size = bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return bytes([0x80 | opcode]) + size + b"\0\0\0\0"


def oversized_frame_close(setup: Setup, path: str, length: int) -> int | None:
    """Announce a text frame of `length` bytes and send only its start: the server refuses it on its head."""
    with raw_websocket(setup, path) as raw:
        raw.sendall(masked_frame_head(0x1, length) + b"x" * 1024)
        return close_code(raw)


def test_ws_text_that_is_not_utf8_is_closed_with_1007(setup: Setup) -> None:
    with raw_websocket(setup, f"/ws?token={setup.alice}") as raw:
        raw.sendall(masked_frame_head(0x1, 2) + b"\xff\xfe")
        assert close_code(raw) == 1007
    still_serves(setup)


def test_ws_frame_head_over_64_kib_is_closed_with_1009(setup: Setup) -> None:
    assert oversized_frame_close(setup, f"/ws?token={setup.alice}", WS_FRAME_LIMIT + 1) == 1009
    still_serves(setup)


def test_sockjs_websocket_broken_framing_is_closed_with_1002(setup: Setup) -> None:
    for frame in ("{bad", '{"op": "ping"}', b"\x00\x01"):
        client = SockJsWs(setup, setup.alice)
        client.ws.send(frame)
        assert client.answer() == Closed(1002), frame
        client.close()
    still_serves(setup)


def test_sockjs_websocket_frame_over_the_transport_limit_is_closed_with_1009(setup: Setup) -> None:
    path = f"/sockjs/v1/000/{uuid.uuid4().hex}/websocket?token={setup.alice}"
    assert oversized_frame_close(setup, path, UVICORN_WS_LIMIT + 1) == 1009
    still_serves(setup)


def test_sockjs_websocket_burst_of_separate_frames_is_closed_with_4013(setup: Setup) -> None:
    path = f"/sockjs/v1/000/{uuid.uuid4().hex}/websocket?token={setup.alice}"
    with raw_websocket(setup, path) as raw:
        raw.sendall(text_frames(json.dumps(['{"op": "ping"}']), 3000))
        texts, _ = server_frames(raw)
    frames = [message for text in texts for message in sockjs_frames(text)]
    assert Closed(4013) in frames, frames[-3:]
    still_serves(setup)


SEND_BODIES = [
    ("not JSON", b"not json", 500, "Broken JSON encoding."),
    ("empty", b"", 500, "Payload expected."),
    ("not a list", b'{"op": "ping"}', 500, "Payload expected."),
    ("a list of numbers", b"[1, 2]", 500, "Payload expected."),
]


@pytest.mark.parametrize(("label", "body", "status", "text"), SEND_BODIES, ids=[case[0] for case in SEND_BODIES])
def test_sockjs_xhr_send_bad_payload(setup: Setup, label: str, body: bytes, status: int, text: str) -> None:
    client = SockJsXhr(setup, setup.alice)
    answer = client.post_send(body, expect=status)
    assert answer.text == text, label
    client.send('{"op": "ping"}')  # the session goes on
    assert client.answer() == {"op": "pong"}
    client.close()
    still_serves(setup)


def test_sockjs_xhr_send_deeply_nested_body_is_broken_json(setup: Setup) -> None:
    client = SockJsXhr(setup, setup.alice)
    answer = client.post_send(b"[" * 100_000 + b"]" * 100_000, expect=500)
    assert answer.text == "Broken JSON encoding."
    client.close()
    still_serves(setup)


def test_sockjs_xhr_send_over_its_limit_is_413(setup: Setup) -> None:
    client = SockJsXhr(setup, setup.alice)
    body = json.dumps(["x" * SOCKJS_SEND_LIMIT]).encode()
    with socket.create_connection(("127.0.0.1", setup.port), timeout=WAIT_S) as raw:
        path = client.base.removeprefix(setup.server.url)
        raw.sendall(
            f"POST {path}/xhr_send?token={setup.alice} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: {len(body)}\r\nContent-Type: text/plain\r\n\r\n".encode()
        )
        # The server may answer and close before it read it all: the answer is still there to read.
        with contextlib.suppress(OSError):
            raw.sendall(body)
        status = raw.recv(65536).split(b"\r\n", 1)[0]
    assert status.startswith(b"HTTP/1.1 413"), status
    client.close()
    still_serves(setup)


# legacy WebSocket ----------------------------------------------------------------------------------------------------
def legacy(setup: Setup) -> ClientConnection:
    ws = connect(f"ws://127.0.0.1:{setup.port}/websocket?token={setup.alice}", max_size=None).__enter__()
    assert json.loads(ws.recv(timeout=WAIT_S))["msgType"] == "1"
    return ws


@pytest.mark.parametrize(
    "frame",
    ["{bad", '{"op": "subscribe", "stream": "user:bob"}', "[1, 2]", '{"msgType": 5}', "x" * (MESSAGE_LIMIT + 1)],
    ids=["invalid JSON", "a v1 subscribe", "a list", "wrong type", "over 4 KiB"],
)
def test_legacy_ignores_other_text_frames(setup: Setup, frame: str) -> None:
    """docs/legacy.md: text frames other than HeartBeat… and ping are ignored, as the Spring back end did."""
    with legacy(setup) as ws:
        ws.send(frame)
        ws.send("HeartBeat:2026-12-04 10:00:00")
        assert json.loads(ws.recv(timeout=WAIT_S))["msgType"] == "0"
    still_serves(setup)


def test_legacy_binary_frame_is_closed_with_4501(setup: Setup) -> None:
    with legacy(setup) as ws:
        ws.send(b"\x00\x01")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=WAIT_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4501
    still_serves(setup)


def test_legacy_frame_over_the_transport_limit_is_closed_with_1009(setup: Setup) -> None:
    assert oversized_frame_close(setup, f"/websocket?token={setup.alice}", UVICORN_WS_LIMIT + 1) == 1009
    still_serves(setup)


def test_legacy_flood_is_closed_with_4013(setup: Setup) -> None:
    with raw_websocket(setup, f"/websocket?token={setup.alice}") as raw:
        raw.sendall(text_frames("HeartBeat", 3000))
        assert close_code(raw) == 4013
    still_serves(setup)


# SSE: the query and Last-Event-ID ------------------------------------------------------------------------------------
def sse_first(setup: Setup, query: str, headers: dict[str, bytes] | None = None) -> tuple[int, str]:
    """The status and, for a stream, its first two frames (retry and welcome); else the body."""
    url = f"{setup.server.url}/sse?token={setup.alice}&{query}"
    with httpx.stream("GET", url, headers=headers, timeout=WAIT_S) as answer:
        if answer.status_code != 200:
            return answer.status_code, answer.read().decode()
        text = ""
        for chunk in answer.iter_text():
            text += chunk
            if "event: welcome" in text and text.count("\n\n") >= 2:
                break
        return 200, text


SSE_REFUSED = [
    ("streams=garbage", 400, "bad_stream"),
    ("streams=user:" + "a" * 6000, 400, "bad_stream"),
    ("streams=job:" + "9" * 6000, 400, "bad_stream"),
    ("streams=job:99999999999999999999999", 400, "bad_stream"),
    ("streams=user:alice,,,user:bob", 403, "forbidden"),
    ("streams=job:424242", 403, "forbidden"),
]


@pytest.mark.parametrize(("query", "status", "code"), SSE_REFUSED, ids=[q[0][:30] for q in SSE_REFUSED])
def test_sse_bad_streams_are_refused(setup: Setup, query: str, status: int, code: str) -> None:
    got, body = sse_first(setup, query)
    assert got == status and json.loads(body)["error"]["code"] == code, (got, body[:200])
    still_serves(setup)


BOGUS_IDS = [
    "garbage",
    "user:alice=",
    "user:alice=k3f9",
    "user:alice=k3f9:-1",
    "user:alice=k3f9:\u00b2",
    "user:alice=k3f9:" + "9" * 30,
    "user:bob=k3f9:1",
    ",,,===,:::",
    "user:alice=" + "k" * 7000 + ":1",
]


@pytest.mark.parametrize("bogus", BOGUS_IDS)
@pytest.mark.parametrize("carrier", ["query", "header"])
def test_sse_bogus_last_event_id_is_ignored(setup: Setup, bogus: str, carrier: str) -> None:
    """A Last-Event-ID that does not parse is ignored: the stream starts from now, as without one."""
    if carrier == "query":
        status, text = sse_first(setup, "last_event_id=" + httpx.QueryParams({"x": bogus})["x"].replace("%", "%25"))
    else:
        status, text = sse_first(setup, "", headers={"Last-Event-ID": bogus.encode()})
    assert status == 200 and "event: welcome" in text and "event: recovered" not in text, text[:300]
    still_serves(setup)


def test_sse_huge_since_is_an_unrecovered_resume(setup: Setup) -> None:
    status, text = sse_first(setup, "last_event_id=user:alice%3Dnosuchepoch:99999999999999999999")
    assert status == 200 and "event: welcome" in text, text[:300]
    still_serves(setup)


def test_sse_more_streams_than_the_limit_are_refused(setup: Setup) -> None:
    streams = ",".join(f"user:u{i}" for i in range(MAX_STREAMS + 1))
    url = f"{setup.server.url}/sse?token={setup.root}&streams={streams}"
    with httpx.stream("GET", url, timeout=WAIT_S) as answer:
        assert answer.status_code == 400
        assert json.loads(answer.read())["error"]["code"] == "too_many_streams"
