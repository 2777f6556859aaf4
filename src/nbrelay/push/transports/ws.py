"""Protocol v1 over WebSocket: a reader that feeds the session, and one writer that alone sends, in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from nbrelay.auth import request_origin_allowed
from nbrelay.errors import Unavailable
from nbrelay.hub.hub import Subscription
from nbrelay.jobs import User
from nbrelay.models import Event, compact_json
from nbrelay.push.transports.link import SLOW_CLOSE_WAIT_S, SessionLink, open_session, opening, unavailable
from nbrelay.push.transports.port import PushPort
from nbrelay.push.transports.session import Close, CloseCode, Send, Session, Subscribe


class WebSocketConnection(SessionLink):
    """Protocol v1 over a Starlette WebSocket: a reader task feeds the session; the connection's own task is the one
    writer (`write`)."""

    transport = "ws"
    session: Session  # set from the start: the connection is made once the session is

    def __init__(self, websocket: WebSocket, session: Session, push: PushPort):
        self.websocket = websocket
        self.session = session
        self.push = push
        self.subscription = push.hub.subscription()
        self.control: deque[Send | Subscribe | str] = deque()  # answers to send before events; str: a raw frame
        self.close_request: Close | None = None
        self.peer_gone = False
        self.writer_task: asyncio.Task[Any] | None = None
        self.aborting = False
        self.subscription.on_overflow = self._abort_send
        self.sent_counter = push.metrics.events_sent.labels(self.transport)

    def _abort_send(self) -> None:
        """The queue overflowed: the writer may be blocked sending to a peer that stopped reading. Interrupt it
        (a send waiting for the socket to drain has written nothing yet, so no frame is cut)."""
        if self.writer_task is not None and not self.aborting:
            self.aborting = True
            self.writer_task.cancel()

    @property
    def subscriber(self) -> Subscription:
        return self.subscription

    def in_order(self, action: Send | Subscribe) -> None:
        self.control.append(action)  # the writer carries it out, before the events that wait

    def close_soon(self, close: Close) -> None:
        if self.close_request is None:
            self.close_request = close
        self.subscription.wakeup.set()

    async def send(self, message: dict[str, Any]) -> None:
        await self.websocket.send_text(compact_json(message))

    async def read(self) -> None:
        """Feed client text frames to `on_text` until the peer goes."""
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    self.close_soon(Close(CloseCode.BAD_REQUEST, "binary frames are not part of the protocol"))
                    return
                self.on_text(text)
                self.subscription.wakeup.set()
        except WebSocketDisconnect:
            pass
        self.peer_gone = True
        self.close_soon(Close(1000, "peer closed"))

    async def _follow(self, action: Subscribe) -> None:
        items = await self.push.follow(self.session, self.subscription, action)
        for item in items:
            if isinstance(item, Send):
                await self.send(item.message)
        await self._deliver([item for item in items if isinstance(item, Event)])

    def frame(self, event: Event) -> str | None:
        """The text frame for an event the session accepted (None: nothing to send for it)."""
        return event.ws_text()

    async def history_lost(self, notice: Send) -> None:
        """A stream's epoch changed under the client (see Session.accept): tell it, before the event."""
        await self.send(notice.message)

    async def _deliver(self, events: list[Event]) -> None:
        sent = 0
        for event in events:
            verdict = self.session.accept(event)
            if verdict is False:
                continue
            if verdict is not True:
                await self.history_lost(verdict)
            if (text := self.frame(event)) is not None:
                await self.websocket.send_text(text)
                sent += 1
        if sent:
            self.sent_counter.inc(sent)

    async def write(self) -> int:
        """The only sender: control answers first (resumes send history before live events), then events."""
        subscription = self.subscription
        while True:
            while (
                not self.control
                and not subscription.queue
                and not subscription.overflowed
                and self.close_request is None
            ):
                subscription.wakeup.clear()
                await subscription.wakeup.wait()
            if self.close_request is not None:
                return await self._close(self.close_request)
            while self.control:
                action = self.control.popleft()
                if isinstance(action, str):
                    await self.websocket.send_text(action)
                elif isinstance(action, Send):
                    await self.send(action.message)
                elif isinstance(action, Subscribe):
                    await self._follow(action)
            if subscription.overflowed:
                return await self.close_slow()
            batch = list(subscription.queue)
            subscription.queue.clear()
            await self._deliver(batch)

    async def _close(self, close: Close, wait_s: float | None = None) -> int:
        if not self.peer_gone:
            with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError, TimeoutError):
                await asyncio.wait_for(self.websocket.close(close.code, close.reason), wait_s)
        return close.code

    async def close_slow(self) -> int:
        """Close a slow consumer with 4008; its buffer must drain first, so wait a bounded time for that."""
        self.push.hub.unsubscribe(self.subscription)
        return await self._close(self.slow_consumer(), wait_s=SLOW_CLOSE_WAIT_S)


def origin_refused(websocket: WebSocket, push: PushPort) -> bool:
    peer = websocket.client.host if websocket.client else None
    return not request_origin_allowed(websocket.headers, peer, push.settings)


async def websocket_user(websocket: WebSocket, push: PushPort) -> User | None:
    """The user behind a WebSocket handshake: session cookie, ?token= or the proxy header, per the auth mode."""
    return await push.auth.resolve(
        websocket.headers,
        websocket.cookies,
        client_host=websocket.client.host if websocket.client else None,
        query_token=websocket.query_params.get("token"),
    )


async def serve_websocket(websocket: WebSocket, push: PushPort) -> None:
    if origin_refused(websocket, push):
        await websocket.close(code=1008)  # before accept: the handshake is answered with HTTP 403
        return
    user = await websocket_user(websocket, push)
    await websocket.accept()
    session = open_session(push, user)
    if isinstance(session, Close):
        await websocket.close(session.code, session.reason)
        return
    connection = WebSocketConnection(websocket, session, push)

    async def greet() -> None:
        async for message in opening(push, session):
            await connection.send(message)

    await run_connection(connection, greet)


async def run_connection(connection: WebSocketConnection, opening: Callable[[], Awaitable[None]]) -> None:
    """A connection's life: registered, its opening messages, a reader beside the one writer, clean-up.

    A queue overflow cancels the writer (it may be stuck sending to a peer that stopped reading); that one
    cancellation is taken back and turned into the 4008 close.
    """
    push = connection.push
    push.add(connection)
    code: int | None = None
    reader: asyncio.Task[None] | None = None
    try:
        await opening()
        reader = asyncio.create_task(connection.read())
        connection.writer_task = asyncio.current_task()
        try:
            code = await connection.write()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not connection.aborting or task is None or task.uncancel() > 0:
                raise  # not our own interruption (the server is shutting down): let it through
            code = await connection.close_slow()
    except (WebSocketDisconnect, OSError, RuntimeError):
        code = 1006
    except Unavailable as exc:
        code = await connection._close(unavailable(exc))
    finally:
        if reader is not None:
            reader.cancel()
        push.hub.unsubscribe(connection.subscription)
        push.remove(connection, code)
