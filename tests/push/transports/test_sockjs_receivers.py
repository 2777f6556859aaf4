"""A receiving request whose client goes away while its frames are written: the session ends ("Connection
interrupted") rather than go on without what was in flight, also when it was the response's last frame."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.websockets import WebSocket

from nbrelay.push.transports.sockjs.frames import RECEIVERS
from nbrelay.push.transports.sockjs.receivers import receive_over_http
from nbrelay.push.transports.sockjs.session import SockJSSession

SCOPE = {"type": "http", "path": "/x", "headers": [], "query_string": b"", "scheme": "http"}
BIG = "x" * 300_000  # past the streaming transports' byte limit below: always a response's last frame


async def says_big(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(BIG)
    await websocket.receive()


class GoneClient:
    """As uvicorn behaves once its client has gone: every later send returns at once and sends nothing, and
    receive() says http.disconnect. The client goes in the middle of the first frame that is this long."""

    def __init__(self, gone_at_bytes: int) -> None:
        self.gone_at_bytes = gone_at_bytes
        self.gone = asyncio.Event()
        self.received = b""

    async def send(self, message: dict[str, Any]) -> None:
        if self.gone.is_set():
            return
        body = message.get("body", b"")
        if len(body) >= self.gone_at_bytes:
            self.received += body[: len(body) // 2]
            self.gone.set()
            return
        self.received += body

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}


@pytest.mark.parametrize("transport", ["xhr", "xhr_streaming", "eventsource", "jsonp"])
async def test_a_client_gone_during_the_last_frame_ends_the_session(transport: str) -> None:
    """Found from outside: a polling response (every frame is its last) broken off by its client went unnoticed,
    the frame was lost and the next request found the session going on."""
    session = SockJSSession(SCOPE)
    session.start(says_big)
    assert await session.wait_open()
    assert await session.next_frame(30) == "o"
    client = GoneClient(gone_at_bytes=len(BIG))
    released = []
    await asyncio.wait_for(
        receive_over_http(
            session,
            RECEIVERS[transport],
            "cb",
            client.receive,
            client.send,
            lambda: released.append(True),
            limit_bytes=128 * 1024,
            heartbeat_s=30,
        ),
        30,
    )
    assert BIG.encode() not in client.received  # it got half of it
    assert await asyncio.wait_for(session.next_frame(30), 30) == 'c[1002,"Connection interrupted"]'
