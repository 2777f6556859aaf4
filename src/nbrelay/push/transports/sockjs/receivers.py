"""Receivers: what carries a session's frames to the browser. An HTTP request (one frame when polling; frames
until the close frame or the byte limit when streaming), or a WebSocket that lives as long as its session."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.types import Receive, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from nbrelay.push.transports.sockjs.frames import INTERRUPTED, HttpTransport, ProtocolError, decode_messages, is_close
from nbrelay.push.transports.sockjs.session import SockJSSession


async def _until_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


class _Gone(Exception):
    """The client went away while frames were written to it."""


async def _pump(
    session: SockJSSession,
    transport: HttpTransport,
    callback: str,
    send: Send,
    release: Callable[[], None],
    gone: asyncio.Event,
    *,
    limit_bytes: int,
    heartbeat_s: float,
) -> None:
    sent = 0
    while True:
        frame = await session.next_frame(heartbeat_s)
        body = transport.wrap(frame, callback).encode()
        last = not transport.streaming or is_close(frame) or sent + len(body) >= limit_bytes
        if last:
            release()  # before the response ends: the client's next request may come at once
        await send({"type": "http.response.body", "body": body, "more_body": True})
        sent += len(body)
        if last:
            # The server's send returns without a word once its client has gone (found from outside: a
            # response's last frame, every frame of a polling one, was lost so, and the session went on). Before
            # the response ends (after it, the server says "disconnect" for every request), a disconnect heard
            # by now came during this frame.
            await asyncio.sleep(0)
            if gone.is_set():
                raise _Gone
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return


async def receive_over_http(
    session: SockJSSession,
    transport: HttpTransport,
    callback: str,
    receive: Receive,
    send: Send,
    release: Callable[[], None],
    *,
    limit_bytes: int,
    heartbeat_s: float,
) -> None:
    """Frames into a started response; `release` frees the session for its next receiver. A client that goes
    away meanwhile ends the session: what was in flight is lost, so carrying on would hide a gap ("Connection
    interrupted", as the protocol allows)."""
    prelude = transport.prelude(callback)
    if prelude:
        await send({"type": "http.response.body", "body": prelude.encode(), "more_body": True})
    gone = asyncio.Event()
    pumping = asyncio.create_task(
        _pump(session, transport, callback, send, release, gone, limit_bytes=limit_bytes, heartbeat_s=heartbeat_s)
    )
    watching = asyncio.create_task(_until_disconnect(receive, gone))
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            task.cancel()
        await asyncio.gather(pumping, watching, return_exceptions=True)
    if not pumping.done() or pumping.cancelled() or pumping.exception() is not None:
        session.end(*INTERRUPTED)


async def _read_websocket(websocket: WebSocket, session: SockJSSession) -> None:
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                text = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            if not text:
                continue  # empty frames are ignored
            await session.deliver(decode_messages(text))
    except ProtocolError:
        session.end(1002, "Broken framing")  # broken JSON ends the connection
        return
    except WebSocketDisconnect:
        pass
    session.end(1000, "Connection closed")


async def receive_over_websocket(websocket: WebSocket, session: SockJSSession, heartbeat_s: float) -> None:
    """A framed WebSocket: "o", then frames and heartbeats; the session ends with the socket."""
    if not await session.wait_open():
        await websocket.close(1008)  # before accept: the handshake is refused with HTTP 403
        return
    await websocket.accept()
    reader = asyncio.create_task(_read_websocket(websocket, session))
    try:
        while True:
            frame = await session.next_frame(heartbeat_s)
            await websocket.send_text(frame)
            if is_close(frame):
                break
        with contextlib.suppress(RuntimeError, OSError):
            await websocket.close(1000)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        session.end(1000, "Connection closed")
