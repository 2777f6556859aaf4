"""Server-sent events: one response multiplexing the user's streams; the `id:` is a composite position of all
of them, so the browser's Last-Event-ID resumes every stream exactly. Comments are heartbeats.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from nbrelay.auth import request_origin_allowed
from nbrelay.errors import Unavailable
from nbrelay.hub.hub import STREAM_NAME, parse_position
from nbrelay.models import Event, compact_json
from nbrelay.push.transports.port import PushPort
from nbrelay.push.transports.session import MAX_STREAMS, UNAVAILABLE, Close, Send, Session

log = logging.getLogger(__name__)


def compose_id(positions: dict[str, tuple[str | None, int]]) -> str:
    return ",".join(f"{s}={e}:{o}" for s, (e, o) in sorted(positions.items()) if e is not None)


def parse_id(value: str | None) -> dict[str, str]:
    """ "user:a=k3f9:4,job:7=ab12:9" → {"user:a": "k3f9:4", "job:7": "ab12:9"}; junk is ignored."""
    found: dict[str, str] = {}
    for part in (value or "").split(","):
        stream, sep, position = part.strip().partition("=")
        if sep and STREAM_NAME.match(stream) and parse_position(position):
            found[stream] = position
    return found


def _frame(kind: str | None, data: Any, event_id: str | None = None) -> str:
    lines = []
    if event_id:
        lines.append(f"id: {event_id}")
    if kind:
        lines.append(f"event: {kind}")
    lines.append(f"data: {compact_json(data)}")
    return "\n".join(lines) + "\n\n"


class SseConnection:
    transport = "sse"

    def __init__(self, session: Session, push: PushPort):
        self.session = session
        self.push = push
        self.subscription = push.hub.subscription()
        self.close_request: Close | None = None

    def close_soon(self, close: Close) -> None:
        self.close_request = close
        # Not wakeup.set(): next_batch would go back to waiting for an event, and at shutdown the stream stayed
        # open until uvicorn cancelled it (a traceback per client, and a shutdown that waited its full timeout).
        self.subscription.interrupt()

    def tick(self, now: float) -> None:
        """Nothing to check: an SSE client cannot send, and the stream itself sends the heartbeat comments."""

    def _event(self, event: Event) -> str | None:
        verdict = self.session.accept(event)
        if verdict is False:
            return None
        frame = f"id: {compose_id(self.session.positions)}\ndata: {event.json()}\n\n"
        return frame if verdict is True else _frame("recovered", verdict.message) + frame

    async def stream(self, streams: list[str], resume_from: dict[str, str]) -> AsyncIterator[str]:
        push, session, subscription = self.push, self.session, self.subscription
        code: int | None = None
        try:
            for stream in streams:
                session.positions[stream] = parse_position(resume_from.get(stream)) or (None, 0)
                await push.hub.follow(subscription, stream)
            yield "retry: 2000\n\n"
            positions = await push.default_positions(session.user)
            for stream in streams:
                # Not resumed: the stream starts where it is now (the welcome's position), so every `id:` from
                # here on holds every stream's position, even one that has had no event yet on this connection.
                if session.positions[stream][0] is None:
                    now = positions.get(stream) or await push.hub.position(stream)
                    session.positions[stream] = parse_position(now) or (None, 0)
            # The welcome has an id too: a browser cut off before the first event resumes from it.
            yield _frame("welcome", session.welcome(positions).message, compose_id(session.positions))
            yield _frame("snapshot", {"op": "snapshot", "jobs": await push.snapshot(session.user)})
            for stream, since in resume_from.items():
                if stream not in streams:
                    continue
                for item in await push.resume(session, stream, since):
                    if isinstance(item, Send):  # with an id: where a stream not recovered stands now
                        yield _frame("recovered", item.message, compose_id(session.positions))
                    elif (frame := self._event(item)) is not None:
                        yield frame
            while True:
                try:
                    async with asyncio.timeout(push.settings.sse_heartbeat_s):  # not wait_for: it may swallow a cancel
                        batch = await subscription.next_batch()
                except TimeoutError:
                    yield ": heartbeat\n\n"
                    continue
                if self.close_request is not None or subscription.overflowed:
                    close = self.close_request or session.overflowed()
                    code = close.code
                    yield _frame("close", {"code": close.code, "reason": close.reason})
                    return
                sent = 0
                for event in batch:
                    if (frame := self._event(event)) is not None:
                        sent += 1
                        yield frame
                push.metrics.events_sent.labels(self.transport).inc(sent)
        except Unavailable as exc:
            log.warning("SSE stream closed: %s", exc)
            code = UNAVAILABLE.code
            yield _frame("close", {"code": code, "reason": UNAVAILABLE.reason})
        finally:
            push.hub.unsubscribe(subscription)
            push.remove(self, code)


def _refuse(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def serve_sse(request: Request, push: PushPort) -> Response:
    settings = push.settings
    if not request_origin_allowed(request.headers, request.client.host if request.client else None, settings):
        return _refuse(403, "origin_refused", "this origin may not connect")
    user = await push.auth.resolve(
        request.headers,
        request.cookies,
        client_host=request.client.host if request.client else None,
        query_token=request.query_params.get("token"),
    )
    if user is None:
        return _refuse(401, "unauthorized", "log in, or pass ?token=")
    refusal = push.admit(user)
    if refusal is not None:
        return _refuse(503, "connection_limit", refusal.reason)
    wanted = request.query_params.get("streams") or f"user:{user.name},broadcast"
    streams = list(dict.fromkeys(s.strip() for s in wanted.split(",") if s.strip()))
    if not streams:
        return _refuse(400, "bad_stream", f"{wanted!r} names no stream: broadcast, user:<name> or job:<id>")
    if len(streams) > MAX_STREAMS:  # as /ws refuses the subscribe past it
        return _refuse(400, "too_many_streams", f"at most {MAX_STREAMS} streams per connection, {len(streams)} asked")
    for stream in streams:
        if not STREAM_NAME.match(stream):
            return _refuse(400, "bad_stream", f"{stream!r}: streams are broadcast, user:<name> or job:<id>")
        if not await push.may_follow(user, stream):
            return _refuse(403, "forbidden", f"not allowed to follow {stream}")
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    session = Session(user, heartbeat_s=settings.sse_heartbeat_s, idle_timeout_s=0)
    connection = SseConnection(session, push)
    push.add(connection)
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return StreamingResponse(
        connection.stream(streams, parse_id(last_id)), media_type="text/event-stream", headers=headers
    )
