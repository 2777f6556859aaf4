"""One SockJS session: an ASGI WebSocket towards the app, a queue of SockJS frames towards the browser.

The app (`serve_legacy`, `serve_websocket`) runs unchanged on a Starlette WebSocket whose receive and send are
this session's: its accept becomes the "o" frame, its text messages "a[…]" frames, its close a "c[code, reason]"
frame. Receivers (the requests or the WebSocket of a transport) take frames out; client messages go in.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

from starlette.types import Message, Scope
from starlette.websockets import WebSocket

from nbrelay.push.transports.sockjs.frames import HEARTBEAT, OPEN, close_frame, messages_frame

log = logging.getLogger(__name__)

App = Callable[[WebSocket], Awaitable[None]]

# Messages the app sent that no receiver took yet. Past this the app's send waits, as a WebSocket's send waits for
# its socket buffer; a writer that waits too long has its queue overflow and the connection closes with 4008.
MAX_PENDING_CHARS = 1 << 20
MAX_INBOX = 256  # client messages the app has not read yet; past this the sending request waits


class SessionGone(OSError):
    """The browser side of the session is over (Starlette turns this into WebSocketDisconnect 1006)."""


def websocket_scope(scope: Scope) -> Scope:
    """The scope of the request that opened the session, as a WebSocket's: same headers, cookies, query, client."""
    scheme = "wss" if scope.get("scheme") in ("https", "wss") else "ws"
    return {**scope, "type": "websocket", "scheme": scheme, "subprotocols": [], "extensions": {}}


class SockJSSession:
    def __init__(self, scope: Scope, *, max_pending_chars: int = MAX_PENDING_CHARS, max_inbox: int = MAX_INBOX):
        self.scope = websocket_scope(scope)
        self.max_pending_chars = max_pending_chars
        self.max_inbox = max_inbox
        self.accepted = False  # the app accepted: the "o" frame is due
        self.opened = False  # the "o" frame was taken
        self.refused = False  # the app closed before accepting: the handshake is refused (HTTP 403)
        self.closed: tuple[int, str] | None = None  # served as a close frame to every later receiver
        self.gone = False  # the browser side is over: the app's receive says disconnect
        self.receiving = False  # a receiver is attached (one at a time)
        self.owner: str | None = None  # the user of the opening request; later requests must be the same user
        self.task: asyncio.Task[None] | None = None
        self._connected = False
        self._inbox: deque[str] = deque()
        self._pending: list[str] = []
        self._pending_chars = 0
        self._changed = asyncio.Event()

    # the app side ------------------------------------------------------------------------------------------------
    def start(self, app: App) -> None:
        self.task = asyncio.create_task(self._run(app), name="sockjs-session")

    async def _run(self, app: App) -> None:
        try:
            await app(WebSocket(self.scope, self._app_receive, self._app_send))
        except Exception:
            log.exception("SockJS session app failed")
            self._close(1011, "Internal error")
        finally:
            self._close(1000, "Normal closure")  # an app that returns without closing has closed
            self._wake()

    async def _app_receive(self) -> Message:
        if not self._connected:
            self._connected = True
            return {"type": "websocket.connect"}
        await self._until(lambda: bool(self._inbox) or self.gone)
        if self._inbox:
            text = self._inbox.popleft()
            self._wake()
            return {"type": "websocket.receive", "text": text}
        return {"type": "websocket.disconnect", "code": 1001}

    async def _app_send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            self.accepted = True
        elif kind == "websocket.send":
            await self._until(lambda: self._pending_chars < self.max_pending_chars or self.closed is not None)
            if self.closed is not None:
                raise SessionGone("the SockJS session is closed")
            text = message["text"] if message.get("text") is not None else message["bytes"].decode()
            self._pending.append(text)
            self._pending_chars += len(text)
        elif kind == "websocket.close":
            self.refused = not self.accepted
            self._close(message.get("code", 1000), message.get("reason") or "")
        self._wake()

    # the browser side --------------------------------------------------------------------------------------------
    async def wait_open(self) -> bool:
        """Wait for the app's answer to the handshake: True accepted, False refused."""
        await self._until(lambda: self.accepted or self.refused)
        return self.accepted

    async def next_frame(self, heartbeat_s: float) -> str:
        """The next frame for a receiver (after `wait_open`); "h" when nothing came for heartbeat_s."""
        if not await self._until(self._frame_ready, heartbeat_s):
            return HEARTBEAT
        if not self.opened:
            self.opened = True
            return OPEN
        if self._pending:
            frame = messages_frame(self._pending)
            self._pending, self._pending_chars = [], 0
            self._wake()
            return frame
        assert self.closed is not None
        return close_frame(*self.closed)

    def _frame_ready(self) -> bool:
        return not self.opened or bool(self._pending) or self.closed is not None

    async def deliver(self, texts: list[str]) -> None:
        """Client messages for the app, in order; waits while the app has too many unread, and drops them once
        the app has closed (a flood the app closed with 4013 must not hold the sender until the session expires)."""
        for text in texts:
            await self._until(lambda: len(self._inbox) < self.max_inbox or self.gone or self.closed is not None)
            if self.gone or self.closed is not None:
                return  # nobody reads them any more: the app closed (its close frame tells the client why)
            self._inbox.append(text)
            self._wake()

    def end(self, code: int, reason: str) -> None:
        """The browser side is over (its WebSocket closed, it went away mid-request, or the session timed out)."""
        self.gone = True
        self._close(code, reason)
        self._pending, self._pending_chars = [], 0
        self._wake()

    # internals ---------------------------------------------------------------------------------------------------
    def _close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    def _wake(self) -> None:
        """Wake every waiter to look again at what it waits for (one event for all, replaced once set)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, ready: Callable[[], bool], timeout_s: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout_s):
                while not ready():
                    await self._changed.wait()
        except TimeoutError:
            return ready()
        return True


class SessionTable:
    """The HTTP sessions of one endpoint by id: one receiver at a time, and a session without one for
    `disconnect_delay_s` is ended and forgotten (WebSocket sessions live as long as their socket, not here)."""

    def __init__(self, disconnect_delay_s: float):
        self.disconnect_delay_s = disconnect_delay_s
        self.sessions: dict[str, SockJSSession] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def get(self, session_id: str) -> SockJSSession | None:
        return self.sessions.get(session_id)

    def add(self, session_id: str, session: SockJSSession) -> None:
        self.sessions[session_id] = session
        self._schedule(session_id)

    def remove(self, session_id: str) -> None:
        self.sessions.pop(session_id, None)
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()

    def attach(self, session_id: str, session: SockJSSession) -> bool:
        """Make this request the session's receiver; False when another one still is."""
        if session.receiving:
            return False
        session.receiving = True
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        return True

    def detach(self, session_id: str, session: SockJSSession) -> None:
        session.receiving = False
        if self.sessions.get(session_id) is session:
            self._schedule(session_id)

    def _schedule(self, session_id: str) -> None:
        timer = self._timers.pop(session_id, None)
        if timer is not None:
            timer.cancel()
        loop = asyncio.get_running_loop()
        self._timers[session_id] = loop.call_later(self.disconnect_delay_s, self._expire, session_id)

    def _expire(self, session_id: str) -> None:
        self._timers.pop(session_id, None)
        session = self.sessions.get(session_id)
        if session is None or session.receiving:
            return
        del self.sessions[session_id]
        session.end(1000, "Session timed out")
