"""What a protocol v1 WebSocket does between its Session and the push side, whatever carries its frames: who may
open one, its first messages, the session's actions, liveness, and the closes it ends with. ws.py (over ASGI) and
ws_direct.py (driven by uvicorn's protocol, no task while idle) keep only their I/O.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from nbrelay.hub.hub import Subscriber
from nbrelay.jobs import User
from nbrelay.push.transports.port import PushPort
from nbrelay.push.transports.session import UNAVAILABLE, Close, CloseCode, Send, Session, Subscribe, Unsubscribe

log = logging.getLogger(__name__)

# A slow consumer's 4008 frame waits behind its unread data this long at most; past it, the socket is dropped.
SLOW_CLOSE_WAIT_S = 30.0
UNAUTHORIZED = Close(CloseCode.UNAUTHORIZED, "unauthorized: log in, or pass ?token=")


def open_session(push: PushPort, user: User | None) -> Session | Close:
    """The session of a new connection for `user`, or the close that refuses it (nobody logged in, or a
    connection limit reached)."""
    if user is None:
        return UNAUTHORIZED
    refusal = push.admit(user)
    if refusal is not None:
        return refusal
    settings = push.settings
    return Session(user, heartbeat_s=settings.heartbeat_s, idle_timeout_s=settings.client_idle_timeout_s)


async def opening(push: PushPort, session: Session) -> AsyncIterator[dict[str, Any]]:
    """The first messages, each sent before the next is read: welcome (the streams' positions), then snapshot."""
    yield session.welcome(await push.default_positions(session.user)).message
    yield {"op": "snapshot", "jobs": await push.snapshot(session.user)}


def unavailable(error: Exception) -> Close:
    """The close for a connection the hub cannot serve now (its broker does not answer): resume later."""
    log.warning("push connection closed: %s", error)
    return UNAVAILABLE


class SessionLink:
    """The part of a v1 connection that is not I/O. A subclass supplies `subscriber` (what the hub hands its
    events to), `in_order` and `close_soon`; it may add its own ping frames in `heartbeat`."""

    __slots__ = ()  # ws_direct's connections keep theirs: their size is the memory of an idle connection
    push: PushPort
    session: Session | None

    @property
    def subscriber(self) -> Subscriber:
        raise NotImplementedError

    def in_order(self, action: Send | Subscribe) -> None:
        """Carry out `action` after whatever came before it (a subscribe's resume sends history first)."""
        raise NotImplementedError

    def close_soon(self, close: Close) -> None:
        raise NotImplementedError

    def opened(self) -> Session:
        session = self.session
        assert session is not None, "messages, events and subscribes only reach an opened connection"
        return session

    def on_text(self, text: str) -> None:
        """A client's text message: the session decides what follows."""
        for action in self.opened().receive(text):
            if isinstance(action, Unsubscribe):
                self.push.hub.unsubscribe(self.subscriber, [action.stream])
            elif isinstance(action, Close):
                self.close_soon(action)
            else:
                self.in_order(action)

    def tick(self, now: float) -> None:
        """PushPort's sweep: a client silent too long (it pings every heartbeat_s), then `heartbeat`."""
        session = self.session
        if session is None:  # still opening
            return
        close = session.check_idle(now) or self.heartbeat(session, now)
        if close is not None:
            self.close_soon(close)

    def heartbeat(self, session: Session, now: float) -> Close | None:
        """The server's ping frames, where the connection sends them itself (else its server does)."""
        return None

    def slow_consumer(self) -> Close:
        """The events waiting for the peer overflowed their bound: 4008, the client reconnects and resumes."""
        self.push.metrics.queue_drops.labels("overflow").inc()
        return self.opened().overflowed()
