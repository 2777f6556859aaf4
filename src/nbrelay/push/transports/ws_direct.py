"""Protocol v1 at /ws, served by the server's WebSocket protocol itself: no ASGI scope, task or coroutine is kept
per connection.

An idle push connection is its socket, a Session and one `DirectConnection` (slots, no dict). websockets' sans-I/O
protocol answers the handshake; from then on the connection reads and writes its frames itself (ws_frames.py),
keeping no parser, handshake request or reader per connection. The hub hands events straight to `offer`, which
writes them at once; a broadcast writes one pre-built frame (`Event.ws_frame`) to every socket. A connection runs
a task only while it opens or carries out a subscribe (both read the database); events that arrive meanwhile, or
while the peer is not reading (the socket buffer is over its high-water mark), wait in a bounded
hub.Subscription — the same queue policy as everywhere:
progress coalesced, nothing else dropped, overflow closes with 4008 and the client resumes.

Heartbeats: PushPort's sweep calls `tick` every couple of seconds; a connection sends a ping frame every
heartbeat_s (the first at a random point of the first period, so that connections opened together are not all
pinged at once) and is closed with 4012 when the previous ping went unanswered for heartbeat_s.

Memory per idle connection and CPU per delivered message are measured in bench/push (F4, F5).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import cookie_parser
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.server import ServerProtocol

from nbrelay.auth import request_origin_allowed
from nbrelay.errors import Unavailable
from nbrelay.hub.hub import Subscription
from nbrelay.models import Event, compact_json, text_frame
from nbrelay.push.transports.link import SLOW_CLOSE_WAIT_S, SessionLink, open_session, opening, unavailable
from nbrelay.push.transports.port import PushPort
from nbrelay.push.transports.session import MAX_MESSAGE_BYTES, Close, CloseCode, Send, Session, Subscribe
from nbrelay.push.transports.ws_frames import (
    BINARY,
    CLOSE,
    CONT,
    NO_STATUS,
    PING,
    PONG,
    TEXT,
    Frame,
    FrameError,
    close_frame,
    close_payload_code,
    read_frames,
    server_frame,
)

log = logging.getLogger(__name__)

PUSH_PATH = "/ws"
CLOSE_WAIT_S = 10.0  # how long to wait for the peer's answer to our close frame
MAX_INBOX = 64  # client messages held while a subscribe is under way; more is a flood (4013)
MAX_FRAME = 16 * MAX_MESSAGE_BYTES  # bigger frames and messages close with 1009; the session refuses > 4 KiB
MAX_FRAGMENTS = 256  # a message in more pieces closes with 1009 too (empty fragments would cost memory, no bytes)


class DirectConnection(SessionLink, asyncio.Protocol):
    """One protocol v1 WebSocket, driven by the event loop's callbacks (see the module's docstring)."""

    __slots__ = (
        "backlog",
        "close_rcvd",
        "close_sent",
        "close_timer",
        "closing",
        "conn",
        "failed",
        "fragments",
        "inbox",
        "paused",
        "peer",
        "ping_at",
        "ping_payload",
        "push",
        "registry",
        "rest",
        "sent",
        "session",
        "sock",
        "streams",
        "task",
    )
    transport = "ws"  # the name PushPort counts connections by; the socket is `sock`

    def __init__(self, push: PushPort, conn: ServerProtocol, sock: asyncio.Transport, registry: set[Any]):
        self.push = push
        self.streams: set[str] = set()  # hub.Subscriber: the streams this connection follows
        self.conn: ServerProtocol | None = conn  # the handshake's; dropped once it is answered
        self.sock = sock
        self.registry = registry  # the server's open connections: it closes them on shutdown
        self.session: Session | None = None
        self.task: asyncio.Task[None] | None = None
        self.backlog: Subscription | None = None
        self.inbox: deque[str] | None = None
        self.fragments: list[bytes] | None = None
        self.paused = False
        self.closing = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.close_sent: int | None = None  # the code of the close frame we sent
        self.close_rcvd: int | None = None  # the code of the peer's (NO_STATUS when it had none)
        self.rest: bytes | None = None  # the start of a frame not yet whole
        self.failed = False  # the client broke the framing: nothing more is read
        self.ping_payload: bytes | None = None
        # As if the last ping went out at a random point of the last heartbeat period: connections that open
        # together (every client after a restart) are pinged spread over the period, not all in one sweep.
        self.ping_at = time.monotonic() - random.random() * push.settings.heartbeat_s
        self.sent = 0
        peer = sock.get_extra_info("peername")
        self.peer: str | None = peer[0] if isinstance(peer, tuple) and peer else None

    # opening -------------------------------------------------------------------------------------------------
    def start(self, request: Request) -> None:
        """The handshake request arrived: answer it (after the origin check and finding the user)."""
        conn = self.handshake()
        response = conn.accept(request)
        if response.status_code != 101:  # not a valid WebSocket handshake: websockets says why
            self._answer_and_close(response)
            return
        headers = request.headers
        if not request_origin_allowed(headers, self.peer, self.push.settings):
            self._answer_and_close(conn.reject(403, "Forbidden: this origin may not open push connections\n"))
            return
        self._run(self._open(request, response))

    def handshake(self) -> ServerProtocol:
        conn = self.conn
        assert conn is not None, "the handshake is answered once"
        return conn

    def _answer(self, response: Any) -> None:
        """Send the handshake's answer; after it, frames are read and written here (ws_frames)."""
        conn = self.handshake()
        conn.send_response(response)
        data = conn.data_to_send()
        if data and not self.sock.is_closing():
            self.sock.write(b"".join(data))
        self.conn = None

    def _answer_and_close(self, response: Any) -> None:
        self.closing = True
        self._answer(response)
        self.sock.close()

    async def _open(self, request: Request, response: Any) -> None:
        push = self.push
        headers = request.headers
        query = parse_qs(request.path.partition("?")[2])
        user = await push.auth.resolve(
            headers,
            cookie_parser(headers.get("Cookie", "")),
            client_host=self.peer,
            query_token=next(iter(query.get("token", [])), None),
        )
        if self.sock.is_closing():
            return
        self._answer(response)
        session = open_session(push, user)
        if isinstance(session, Close):
            self.close(session)
            return
        self.session = session
        push.add(self)
        async for message in opening(push, session):
            self.send(message)

    # the one way tasks run: one at a time, events and client messages wait for it ----------------------------
    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        self.task = task = asyncio.get_running_loop().create_task(work)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.task = None
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, Unavailable):
            self.close(unavailable(error))
            return
        if error is not None:
            log.error("push connection failed", exc_info=error)
            self.close(Close(1011, "server error"))
            return
        self._drain()
        inbox = self.inbox
        while inbox and self.task is None and not self.closing:
            self._on_client_text(inbox.popleft())
        if not inbox:
            self.inbox = None

    # client → server -----------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.close_rcvd is not None or self.failed:  # nothing follows a close frame or a framing fault
            return
        rest = self.rest
        try:
            frames, rest = read_frames(rest + data if rest else data, MAX_FRAME)
        except FrameError as error:
            self.fail(error.code, error.reason)
            return
        self.rest = rest or None
        for frame in frames:
            self.on_frame(frame)
            if self.close_rcvd is not None or self.failed:
                break

    def on_frame(self, frame: Frame) -> None:
        """One whole frame from the client."""
        opcode, payload = frame.opcode, frame.payload
        if opcode in (TEXT, CONT):
            fragments = self.fragments
            if opcode == TEXT and fragments is not None:
                self.fail(1002, "a new message began before the last one's final fragment")
                return
            if opcode == CONT and fragments is None:
                self.fail(1002, "a continuation frame without a message")
                return
            if not frame.fin:  # a fragment: kept until the message's last one
                fragments = self.fragments = fragments if fragments is not None else []
                fragments.append(payload)
                if len(fragments) > MAX_FRAGMENTS or sum(map(len, fragments)) > MAX_FRAME:
                    self.fail(1009, f"message over {MAX_FRAME} bytes or {MAX_FRAGMENTS} fragments")
                return
            if fragments is not None:
                payload, self.fragments = b"".join(fragments) + payload, None
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                self.close(Close(1007, "text frames must be UTF-8"))
                return
            self._on_client_text(text)
        elif opcode == PING:
            if self.close_sent is None and self.conn is None:  # after our close, or before the 101: no pong
                self.sock.write(server_frame(PONG, payload))
        elif opcode == PONG:
            if self.ping_payload is not None and payload == self.ping_payload:
                self.ping_payload = None
        elif opcode == CLOSE:
            self._on_close_frame(payload)
        elif opcode == BINARY:
            self.close(Close(CloseCode.BAD_REQUEST, "binary frames are not part of the protocol"))

    def _on_close_frame(self, payload: bytes) -> None:
        """The peer's close: answered with the same code if ours was not sent yet, then the TCP connection ends
        (the server closes it first, RFC 6455 7.1.1)."""
        try:
            code, reason = close_payload_code(payload)
        except FrameError as error:
            self.fail(error.code, error.reason)
            return
        self.close_rcvd = code
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        if self.close_sent is None:
            self.close_sent = code
            self.sock.write(close_frame(code, reason) if code != NO_STATUS else server_frame(CLOSE, b""))
        self.sock.close()

    def _on_client_text(self, text: str) -> None:
        session = self.session
        if self.closing or (session is None and self.task is None):
            return
        if self.task is not None or session is None:  # opening or subscribing: in order, afterwards
            inbox = self.inbox = self.inbox if self.inbox is not None else deque()
            inbox.append(text)
            if len(inbox) > MAX_INBOX:
                self.close(Close(CloseCode.TOO_MANY_REQUESTS, "too many messages: slow down"))
            return
        self.on_text(text)

    @property
    def subscriber(self) -> DirectConnection:
        return self  # it takes the hub's events itself (`offer`)

    def in_order(self, action: Send | Subscribe) -> None:
        """Reached only with no task running: an answer goes out at once, a subscribe runs as the one task."""
        if isinstance(action, Send):
            self.send(action.message)
        else:
            self._run(self._follow(action))

    async def _follow(self, action: Subscribe) -> None:
        """History first (written even over the high-water mark: it is bounded), then what waited meanwhile."""
        session = self.opened()
        for item in await self.push.follow(session, self, action):
            if self.closing:
                return
            if isinstance(item, Send):
                self.send(item.message)
            else:
                self._write(session, item)

    # server → client -----------------------------------------------------------------------------------------
    def _write(self, session: Session, event: Event) -> None:
        """Write `event` if the session takes it, after the `recovered: false` that an epoch change calls for."""
        verdict = session.accept(event)
        if verdict is False:
            return
        if verdict is not True:
            self.send(verdict.message)
        self.sock.write(event.ws_frame())
        self.sent += 1

    def offer(self, event: Event) -> None:
        """The hub's delivery: write now, or queue while a task runs or the peer is not reading."""
        if self.closing:
            return
        if self.task is None and not self.paused and self.backlog is None:
            self._write(self.opened(), event)
            return
        backlog = self.backlog
        if backlog is None:
            backlog = self.backlog = Subscription(self.push.hub.subscriber_queue_size)
        backlog.offer(event)
        if backlog.overflowed:
            self.backlog = None
            self.close(self.slow_consumer(), wait_s=SLOW_CLOSE_WAIT_S)

    def _drain(self) -> None:
        """Write what waited, until the peer stops reading again (then the rest waits for resume_writing)."""
        backlog = self.backlog
        if backlog is None or self.session is None:
            return
        queue, session = backlog.queue, self.session
        while queue and not self.paused and not self.closing:
            self._write(session, queue.popleft())
        if not queue:
            self.backlog = None

    def send(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        self.sock.write(text_frame(compact_json(message).encode()))

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.task is None:
            self._drain()

    # liveness and closing ------------------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        if not self.closing:
            super().tick(now)

    def heartbeat(self, session: Session, now: float) -> Close | None:
        """A ping frame every heartbeat_s; 4012 when the previous one went unanswered for heartbeat_s."""
        if self.ping_payload is not None:
            if now - self.ping_at > session.heartbeat_s:
                return Close(CloseCode.NO_PONG, f"no pong to the server's ping in {session.heartbeat_s:g} s")
        elif now - self.ping_at >= session.heartbeat_s:
            if self.close_sent is not None:
                return None
            self.ping_payload = payload = random.getrandbits(32).to_bytes(4, "big")  # to match its pong: not secret
            self.ping_at = now
            self.sock.write(server_frame(PING, payload))
        return None

    def close_soon(self, close: Close) -> None:
        self.close(close)

    def close(self, close: Close, wait_s: float = CLOSE_WAIT_S) -> None:
        """Send a close frame; the socket closes when the peer answers, or after wait_s."""
        if self.closing:
            return
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        if self.conn is not None:  # failed before the handshake was answered: say so in HTTP
            self._answer_and_close(self.conn.reject(500, "Internal Server Error\n"))
            return
        if self.close_sent is None:
            self.close_sent = close.code
            self.sock.write(close_frame(close.code, close.reason))
        self.close_timer = asyncio.get_running_loop().call_later(wait_s, self.sock.abort)

    def fail(self, code: int, reason: str) -> None:
        """The client broke the framing: the close frame, then our end of the TCP connection; nothing more is read
        (the stream cannot be parsed past the fault). The peer closes its end, or the socket is dropped in
        CLOSE_WAIT_S. Half-closing rather than closing keeps the close frame from being lost to a reset while
        the peer's data still arrives."""
        self.rest = self.fragments = None
        self.failed = True
        self.close(Close(code, reason))
        if self.sock.can_write_eof() and not self.sock.is_closing():
            self.sock.write_eof()

    def shutdown(self) -> None:
        """The server is stopping (after PushPort.close_all sent 4001 to every client)."""
        if self.closing:
            self.sock.close()
        else:
            self.close(Close(CloseCode.SERVER_RESTART, "server restarting: reconnect and resume"), wait_s=1.0)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.task is not None:
            self.task.cancel()
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.registry.discard(self)
        self.push.hub.unsubscribe(self)
        self.backlog = self.inbox = None
        if self.session is not None:
            self.report()
            code = self.close_rcvd if self.close_rcvd is not None else self.close_sent
            self.push.remove(self, code if code is not None else 1006)

    def report(self) -> None:
        """Move the count of events sent into the metrics (counted locally: a broadcast is hot)."""
        if self.sent:
            self.push.metrics.events_sent.labels(self.transport).inc(self.sent)
            self.sent = 0


class PushWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, which hands `/ws` to a DirectConnection; other paths (the legacy
    profile, SockJS) go on to the ASGI app as before."""

    def __init__(self, *args: Any, push_app: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.push_app = push_app
        self.direct: DirectConnection | None = None

    def handle_connect(self, event: Request) -> None:
        push: PushPort | None = getattr(self.push_app.state, "push", None)
        path = event.path.partition("?")[0]
        if push is None or path not in (PUSH_PATH, self.root_path + PUSH_PATH):
            super().handle_connect(event)
            return
        self.direct = direct = DirectConnection(push, self.conn, self.transport, self.connections)
        self.connections.discard(self)
        self.connections.add(direct)  # type: ignore[arg-type]  # uvicorn only calls shutdown() on it
        # uvicorn sets this protocol on the socket after it returns from here: hand over on the next turn
        asyncio.get_running_loop().call_soon(self.transport.set_protocol, direct)
        direct.start(event)

    # until the hand-over, whatever the socket reports belongs to the direct connection (uvicorn's HTTP protocol
    # hands over the request alone: bytes a client sends behind it before the 101, against RFC 6455 4.1, are dropped
    # there)
    def data_received(self, data: bytes) -> None:
        if self.direct is not None:
            self.direct.data_received(data)
        else:
            super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.direct is not None:
            self.direct.connection_lost(exc)
        else:
            super().connection_lost(exc)

    def pause_writing(self) -> None:
        if self.direct is not None:
            self.direct.pause_writing()
        else:
            super().pause_writing()

    def resume_writing(self) -> None:
        if self.direct is not None:
            self.direct.resume_writing()
        else:
            super().resume_writing()
