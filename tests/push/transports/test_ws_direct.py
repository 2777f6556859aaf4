"""The /ws connection served by the WebSocket protocol itself (transports/ws_direct.py), seen from a raw socket:
the server's ping frames and the 4012 close when they go unanswered, fragments, bad frames, a peer that stops
reading and starts again, subscribes racing live events, and the ASGI route for other servers."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import threading
import time
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader
from websockets.sync.client import connect

from nbrelay.models import Event, text_frame
from nbrelay.push.transports.ws_direct import DirectConnection
from tests.push.transports.test_ws import open_session, read_events, recv


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client's frame: masked with a random key."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class RawClient:
    """A WebSocket client written by hand, so a test decides what it answers (pings) and what it sends."""

    def __init__(self, port: int, path: str = "/ws"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        return data

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.sock.sendall(masked(opcode, payload, fin))

    def rest_until_closed(self, timeout_s: float = 10) -> bytes:
        """What the server still sends, up to its end of the TCP connection (a timeout if it never ends it)."""
        self.sock.settimeout(timeout_s)
        data = self.buffer
        while chunk := self.sock.recv(65536):
            data += chunk
        self.buffer = b""
        return data

    def frame(self, timeout_s: float = 30) -> tuple[int, bytes]:
        self.sock.settimeout(timeout_s)
        while True:
            parsed = _parse(self.buffer)
            if parsed is not None:
                opcode, payload, self.buffer = parsed
                return opcode, payload
            self.buffer += self._recv()

    def close(self) -> None:
        self.sock.close()


def _parse(data: bytes) -> tuple[int, bytes, bytes] | None:
    if len(data) < 2:
        return None
    size, at = data[1] & 0x7F, 2
    if size == 126:
        if len(data) < 4:
            return None
        size, at = struct.unpack("!H", data[2:4])[0], 4
    elif size == 127:
        if len(data) < 10:
            return None
        size, at = struct.unpack("!Q", data[2:10])[0], 10
    if len(data) < at + size:
        return None
    return data[0] & 0x0F, data[at : at + size], data[at + size :]


def _texts(client: RawClient, count: int) -> list[dict[str, Any]]:
    """The next `count` text messages (ping frames on the way are answered)."""
    messages = []
    while len(messages) < count:
        opcode, payload = client.frame()
        if opcode == 0x9:
            client.send(0xA, payload)
        elif opcode == 0x1:
            messages.append(json.loads(payload))
        else:
            raise AssertionError(f"unexpected frame {opcode}: {payload!r}")
    return messages


def _close_code(payload: bytes) -> int:
    return int(struct.unpack("!H", payload[:2])[0])


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_prebuilt_frames_parse_as_websocket_text_frames(size: int) -> None:
    payload = ("é" * (size // 2) + "x" * (size % 2)).encode()
    reader = StreamReader()
    reader.feed_data(text_frame(payload))
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame = done.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data == payload


def test_event_frame_carries_the_protocol_v1_text() -> None:
    event = Event("notice", {"text": "ünïcode"}, stream="broadcast", offset=3, epoch="e1")
    assert text_frame(event.ws_text().encode()) == event.ws_frame()
    parsed = _parse(event.ws_frame())
    assert parsed is not None and parsed[0] == 0x1 and json.loads(parsed[1])["op"] == "event"
    assert event.ws_frame() is event.ws_frame()  # built once, whatever the number of sockets


def test_a_direct_connection_is_its_slots() -> None:
    """An idle connection's memory (bench/push, F4): nothing it inherits (SessionLink, asyncio.Protocol) gives it
    a __dict__ or a weak reference slot."""
    assert DirectConnection.__dictoffset__ == 0 and DirectConnection.__weakrefoffset__ == 0
    assert all(vars(base).get("__slots__") is not None for base in DirectConnection.__mro__[:-1])


def test_connections_opened_together_are_pinged_spread_over_the_heartbeat() -> None:
    """Each connection's first ping comes at a random point of its first heartbeat period (then every period):
    the clients that reconnect together after a restart are not all pinged in one sweep."""

    class Sock:
        def get_extra_info(self, name: str) -> Any:
            return ("127.0.0.1", 5000)

    class Port:
        settings = type("S", (), {"heartbeat_s": 25.0})()

    before = time.monotonic()
    pinged = [DirectConnection(Port(), None, Sock(), set()).ping_at for _ in range(50)]  # type: ignore[arg-type]
    after = time.monotonic()
    assert all(before - 25.0 <= at <= after for at in pinged)
    assert max(pinged) - min(pinged) > 25.0 / 2  # 50 of them within half the period: chance 50 / 2**49


def test_server_pings_and_a_peer_that_answers_stays(live: Any) -> None:
    server = live(heartbeat_s=1, client_idle_timeout_s=0)
    client = RawClient(server.port)
    try:
        assert [m["op"] for m in _texts(client, 2)] == ["welcome", "snapshot"]
        pings = 0
        while pings < 3:  # three heartbeats answered: still open, and still serving
            opcode, payload = client.frame()
            assert opcode == 0x9, (opcode, payload)
            client.send(0xA, payload)
            pings += 1
        client.send(0x1, b'{"op":"ping"}')
        assert _texts(client, 1) == [{"op": "pong"}]
    finally:
        client.close()


def test_a_peer_that_does_not_answer_pings_is_closed_with_4012(live: Any) -> None:
    server = live(heartbeat_s=1, client_idle_timeout_s=0)
    client = RawClient(server.port)
    try:
        _texts(client, 2)
        opcodes = []
        while True:
            opcode, payload = client.frame()
            opcodes.append(opcode)
            if opcode == 0x8:
                break
        assert opcodes[0] == 0x9 and _close_code(payload) == 4012
        assert b"no pong" in payload
    finally:
        client.close()


def test_fragmented_messages_are_joined(live: Any) -> None:
    server = live()
    client = RawClient(server.port)
    try:
        _texts(client, 2)
        client.send(0x1, b'{"op":', fin=False)
        client.send(0x0, b'"pi', fin=False)
        client.send(0x0, b'ng"}')
        assert _texts(client, 1) == [{"op": "pong"}]
    finally:
        client.close()


@pytest.mark.parametrize(
    ("opcode", "payload", "code"),
    [
        (0x2, b"\x00\x01", 4501),
        (0x1, b'{"op":"\xff"}', 1007),
        (0x1, b'{"op":"ping","pad":"' + b"x" * 10_000 + b'"}', 4501),  # over 4 KiB: the session refuses it
        (0x1, b'{"op":"ping","pad":"' + b"x" * 70_000 + b'"}', 1009),  # over 64 KiB: never read whole
    ],
    ids=["binary", "bad-utf8", "over-4KiB", "over-64KiB"],
)
def test_bad_frames_close_the_connection(live: Any, opcode: int, payload: bytes, code: int) -> None:
    server = live()
    client = RawClient(server.port)
    try:
        _texts(client, 2)
        client.send(opcode, payload)
        received, payload = client.frame()
        assert received == 0x8 and _close_code(payload) == code
    finally:
        client.close()


def test_a_peer_that_stops_reading_then_reads_gets_everything_in_order(live: Any) -> None:
    """Events published while the socket buffer is full wait in the bounded queue and follow in order."""
    server = live(subscriber_queue_size=2000, broker_url="memory://")
    with open_session(server, max_queue=1, max_size=2**20) as ws:
        recv(ws)  # the pong: subscribed
        text = "y" * 8192
        for i in range(400):  # 3 MB: far over the socket buffers, under the queue bound
            server.publish("user:local", kind="job.output", text=text, n=i)
        events, _ = read_events(ws, 400, timeout_s=60)
    assert [e["data"]["n"] for e in events] == list(range(400))


def test_subscribe_with_resume_while_events_flow_is_exact(live: Any) -> None:
    """History and live events that overlap during the subscribe arrive once each, in order."""
    server = live(history_size=5000)
    first = server.publish("broadcast", n=-1)
    done = threading.Event()

    def publish() -> None:
        for i in range(1500):
            server.publish("broadcast", n=i)
        done.set()

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        time.sleep(0.05)  # some history exists before the resume; more is published during and after it
        with open_session(server, stream="broadcast", since=first.id) as ws:
            events, others = read_events(ws, 1500, timeout_s=60)
    finally:
        publisher.join()
    assert done.is_set()
    assert [e["data"]["n"] for e in events] == list(range(1500))
    assert any(m.get("op") == "recovered" and m["recovered"] for m in others)


def test_shutdown_with_a_peer_that_never_answers_the_close(live: Any) -> None:
    """The client hears 4001 and never answers it: the server still stops (its close wait is bounded)."""
    server = live()
    client = RawClient(server.port)
    _texts(client, 2)
    server.stop()
    opcode, payload = client.frame()
    assert opcode == 0x8 and _close_code(payload) == 4001
    assert server.thread is not None and not server.thread.is_alive()
    client.close()


def test_other_asgi_servers_get_v1_from_the_app_route(tmp_path: Any, workspace: Any) -> None:
    """Under plain uvicorn (no nbrelay protocol), /ws is the app's ASGI route, with the same protocol."""
    from tests.live import LiveServer

    server = LiveServer(workspace, tmp_path / "data", plain_asgi=True).start()
    try:
        with connect(server.ws_url) as ws:
            assert recv(ws)["op"] == "welcome"
            assert recv(ws)["op"] == "snapshot"
            ws.send('{"op":"subscribe","stream":"user:local"}')
            ws.send('{"op":"ping"}')
            assert recv(ws) == {"op": "pong"}
            server.publish("user:local", n=7)
            assert recv(ws)["data"]["n"] == 7
    finally:
        server.stop()


def test_a_failure_before_the_handshake_is_answered_gets_http_500(live: Any) -> None:
    """An error while finding the user (say, the database is down) answers the handshake with 500, at once."""
    server = live()

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the token table is unreachable")

    server.app.state.push.auth.resolve = broken
    with pytest.raises(InvalidStatus) as refused:
        connect(server.ws_url, open_timeout=10)
    assert refused.value.response.status_code == 500


def test_a_client_close_is_answered_with_its_code_and_the_server_ends_the_connection(live: Any) -> None:
    server = live()
    client = RawClient(server.port)
    try:
        _texts(client, 2)
        client.send(0x8, struct.pack("!H", 4321) + b"leaving")
        opcode, payload = client.frame()
        assert opcode == 0x8 and _close_code(payload) == 4321
        assert client.rest_until_closed() == b""
    finally:
        client.close()


def test_a_ping_frame_is_answered_with_its_payload(live: Any) -> None:
    server = live()
    client = RawClient(server.port)
    try:
        _texts(client, 2)
        client.send(0x9, b"are you there")
        assert client.frame() == (0xA, b"are you there")
        # an open connection keeps no handshake, parser or reader of websockets (bench/push F4: memory per socket)
        (connection,) = server.app.state.push.connections
        assert isinstance(connection, DirectConnection) and connection.conn is None and connection.rest is None
    finally:
        client.close()


def test_frames_split_across_reads_are_put_together(live: Any) -> None:
    server = live()
    client = RawClient(server.port)
    try:
        _texts(client, 2)
        data = masked(0x1, b'{"op":"subscribe","stream":"user:local"}') + masked(0x1, b'{"op":"ping"}')
        for cut in (1, 2, 7, len(data) - 3):  # inside a header, inside a mask key, inside a payload
            client.sock.sendall(data[:cut])
            time.sleep(0.05)  # a read of its own
            client.sock.sendall(data[cut:])
            assert _texts(client, 1) == [{"op": "pong"}]
        server.publish("user:local", n=1)
        assert _texts(client, 1)[0]["data"]["n"] == 1
    finally:
        client.close()


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x81, 0x02]) + b"hi",  # not masked
        masked(0x0, b"more"),  # a continuation with no message begun
        masked(0x1, b"a", fin=False) + masked(0x1, b"b"),  # a new message inside a fragmented one
        masked(0x8, struct.pack("!H", 1005)),  # a code no endpoint may send
    ],
    ids=["unmasked", "lone-continuation", "interleaved-messages", "bad-close-code"],
)
def test_framing_faults_close_with_1002_and_end_the_connection(live: Any, data: bytes) -> None:
    server = live()
    client = RawClient(server.port)
    try:
        _texts(client, 2)
        client.sock.sendall(data)
        opcode, payload = client.frame()
        assert opcode == 0x8 and _close_code(payload) == 1002
        client.sock.sendall(masked(0x8, struct.pack("!H", 1002)))
        assert client.rest_until_closed() == b""
    finally:
        client.close()


def test_a_message_in_endless_empty_fragments_is_closed_with_1009(live: Any) -> None:
    """Fragments that carry no bytes still cost memory: their number is bounded as well as their size."""
    server = live()
    client = RawClient(server.port)
    try:
        _texts(client, 2)
        client.sock.sendall(masked(0x1, b"", fin=False) + masked(0x0, b"", fin=False) * 300)
        opcode, payload = client.frame()
        assert opcode == 0x8 and _close_code(payload) == 1009
    finally:
        client.close()
