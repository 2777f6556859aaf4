"""Protocol v1 as a state machine with no I/O: text in → actions out. Transports only carry the actions out.

Client → server: {"op": "subscribe", "stream", "since"?} · {"op": "unsubscribe", "stream"} · {"op": "ping"}.
Server → client: welcome · snapshot · event · recovered · pong · error; close codes in `CloseCode`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from nbrelay.hub.hub import STREAM_NAME, parse_position
from nbrelay.jobs import User
from nbrelay.models import Event

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 4096
MAX_STREAMS = 64


class CloseCode(IntEnum):
    """4000-4499: the client should reconnect; 4500-4999: it should not."""

    TRY_AGAIN_LATER = 1013  # RFC 6455's registry: the hub's broker is unreachable; reconnect in a while
    SERVER_RESTART = 4001
    SLOW_CONSUMER = 4008
    NO_PONG = 4012
    TOO_MANY_REQUESTS = 4013
    UNAUTHORIZED = 4500
    BAD_REQUEST = 4501
    FORBIDDEN = 4503
    CONNECTION_LIMIT = 4504


@dataclass(frozen=True, slots=True)
class Send:
    message: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Subscribe:
    stream: str
    since: str | None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    stream: str


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str  # under 120 bytes, as close frames require


Action = Send | Subscribe | Unsubscribe | Close

# For a connection the hub cannot serve now (its broker is unreachable): the client comes back later and resumes.
UNAVAILABLE = Close(CloseCode.TRY_AGAIN_LATER, "push is unavailable for a moment: reconnect and resume")


def may_read(user: User, stream: str) -> bool:
    """Users read their own stream and their own jobs' streams (checked by the caller), and broadcast."""
    if user.admin or stream == "broadcast":
        return True
    return stream == f"user:{user.name}"


def event_message(event: Event) -> dict[str, Any]:
    return {"op": "event", **event.to_dict()}


def _recovered(stream: str, recovered: bool, epoch: str, offset: int) -> Send:
    """The answer to a resume, or the notice that history was lost; `position` is where the client now is."""
    return Send({"op": "recovered", "stream": stream, "recovered": recovered, "position": f"{epoch}:{offset}"})


class Session:
    """One connection's protocol state: subscriptions with their last delivered offsets, liveness, rate."""

    def __init__(
        self,
        user: User,
        *,
        heartbeat_s: float,
        idle_timeout_s: float,
        rate_per_s: float = 20.0,
        burst: int = 60,
        now: float | None = None,
    ):
        self.user = user
        self.heartbeat_s = heartbeat_s
        self.idle_timeout_s = idle_timeout_s
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.tokens = float(burst)
        self.last_heard = self.last_refill = time.monotonic() if now is None else now
        self.positions: dict[str, tuple[str | None, int]] = {}  # stream → (epoch, last delivered offset)
        self.closed: Close | None = None

    # server → client -----------------------------------------------------------------------------------------
    def welcome(self, positions: dict[str, str]) -> Send:
        return Send(
            {
                "op": "welcome",
                "protocol": PROTOCOL_VERSION,
                "user": self.user.name,
                "admin": self.user.admin,
                "heartbeat_s": self.heartbeat_s,
                "streams": positions,
            }
        )

    def accept(self, event: Event) -> bool | Send:
        """Whether to send `event`, moving the stream's position forward unless False:
        False: already delivered (resume overlap) or not followed; True: send it;
        a Send: send that first, then the event. It is `recovered: false`, for an event whose epoch is not the
        one the client knows for the stream: the stream's history was lost (its broker restarted empty, say)
        and what the client holds may be stale, so it re-reads state, as after an unrecovered resume."""
        assert event.stream is not None and event.offset is not None
        position = self.positions.get(event.stream)
        if position is None:
            return False
        epoch, last = position
        if epoch == event.epoch:
            if event.offset <= last:
                return False
            self.positions[event.stream] = (epoch, event.offset)
            return True
        self.positions[event.stream] = (event.epoch, event.offset)
        if epoch is None:  # subscribed without a position: the first event tells the epoch
            return True
        assert event.epoch is not None
        return _recovered(event.stream, False, event.epoch, event.offset - 1)

    def deliver(self, event: Event) -> list[dict[str, Any]]:
        """The messages for `event` (see accept): none, the event, or a `recovered: false` and the event."""
        verdict = self.accept(event)
        if verdict is False:
            return []
        return [event_message(event)] if verdict is True else [verdict.message, event_message(event)]

    def resumed(self, stream: str, recovered: bool, epoch: str, last_offset: int) -> Send:
        """After a resume: from here on, events are new to the client (history was sent, or it re-reads REST)."""
        if not recovered:
            self.positions[stream] = (epoch, last_offset)
        return _recovered(stream, recovered, epoch, last_offset)

    # client → server -----------------------------------------------------------------------------------------
    def heard(self, now: float | None = None) -> Close | None:
        """A client message of any profile came: the client is alive; the close for a flood (past the burst,
        then the rate), else None."""
        now = time.monotonic() if now is None else now
        self.last_heard = now
        if not self._take_token(now):
            return self._close(CloseCode.TOO_MANY_REQUESTS, "too many messages: slow down")
        return None

    def admit(self, text: str, now: float | None = None) -> Close | None:
        """A protocol v1 message: `heard`, then the close for one over MAX_MESSAGE_BYTES, else None."""
        refused = self.heard(now)
        if refused is not None:
            return refused
        if len(text.encode()) > MAX_MESSAGE_BYTES:
            return self._close(CloseCode.BAD_REQUEST, f"message over {MAX_MESSAGE_BYTES} bytes")
        return None

    def receive(self, text: str, now: float | None = None) -> list[Action]:
        refused = self.admit(text, now)
        if refused is not None:
            return [refused]
        try:
            message = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            return [self._error("bad_json", 'messages must be JSON objects like {"op": "ping"}')]
        if not isinstance(message, dict):
            return [self._error("bad_message", 'messages must be JSON objects like {"op": "ping"}')]
        op = message.get("op")
        if op == "ping":
            return [Send({"op": "pong"})]
        if op in ("subscribe", "unsubscribe"):
            return self._stream_op(op, message)
        return [self._error("unknown_op", f"unknown op {op!r}; expected subscribe, unsubscribe or ping")]

    def _stream_op(self, op: str, message: dict[str, Any]) -> list[Action]:
        stream = message.get("stream")
        if not isinstance(stream, str) or not STREAM_NAME.match(stream):
            return [self._error("bad_stream", f"{op}: 'stream' must be broadcast, user:<name> or job:<id>")]
        if op == "unsubscribe":
            self.positions.pop(stream, None)
            return [Unsubscribe(stream)]
        since = message.get("since")
        if since is not None and (not isinstance(since, str) or parse_position(since) is None):
            return [self._error("bad_since", "'since' must be an event id like \"k3f9:42\"", stream=stream)]
        if stream not in self.positions and len(self.positions) >= MAX_STREAMS:
            return [self._error("too_many_streams", f"at most {MAX_STREAMS} streams per connection", stream=stream)]
        # Counted now; where it is followed from is set when the subscribe is carried out (`following`), in order
        # with the events before it: a stream subscribed to again with `since` lost the start of its history when
        # a live event still on its way moved the position past it.
        self.positions.setdefault(stream, (None, 0))
        return [Subscribe(stream, since)]

    def following(self, action: Subscribe) -> None:
        """The subscribe is being carried out: its stream is followed from `since` (from its next event without)."""
        self.positions[action.stream] = parse_position(action.since) or (None, 0)

    def refuse(self, stream: str) -> Send:
        """The transport found the stream is not this user's (a job of someone else, or another user)."""
        self.positions.pop(stream, None)
        return self._error("forbidden", f"not allowed to follow {stream}", stream=stream)

    # liveness ------------------------------------------------------------------------------------------------
    def check_idle(self, now: float | None = None) -> Close | None:
        """Close when the client has been silent too long (it should ping every heartbeat_s)."""
        now = time.monotonic() if now is None else now
        if self.idle_timeout_s > 0 and now - self.last_heard > self.idle_timeout_s:
            return self._close(CloseCode.NO_PONG, f"no message from the client in {self.idle_timeout_s:g} s")
        return None

    def overflowed(self) -> Close:
        return self._close(CloseCode.SLOW_CONSUMER, "too slow to keep up: reconnect and resume")

    # internals -----------------------------------------------------------------------------------------------
    def _take_token(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last_refill) * self.rate_per_s)
        self.last_refill = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def _error(self, code: str, reason: str, **extra: Any) -> Send:
        return Send({"op": "error", "code": code, "reason": reason, **extra})

    def _close(self, code: int, reason: str) -> Close:
        self.closed = Close(code, reason[:119])
        return self.closed
