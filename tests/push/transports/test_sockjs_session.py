"""A SockJS session between a small ASGI WebSocket app and frame-taking receivers, with no HTTP at all."""

from __future__ import annotations

import asyncio

from starlette.websockets import WebSocket

from nbrelay.push.transports.sockjs.session import SessionTable, SockJSSession

SCOPE = {"type": "http", "path": "/x", "headers": [], "query_string": b"", "scheme": "http"}


async def echo(websocket: WebSocket) -> None:
    """Greets, echoes, and closes with 3000 on "bye"."""
    await websocket.accept()
    await websocket.send_text("hello")
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["text"] == "bye":
            await websocket.close(3000, "Go away!")
            return
        await websocket.send_text(message["text"])


async def frames_until(session: SockJSSession, last: str, heartbeat_s: float = 30) -> list[str]:
    found = []
    while not found or found[-1] != last:
        found.append(await asyncio.wait_for(session.next_frame(heartbeat_s), 30))
    return found


async def test_open_messages_and_close() -> None:
    session = SockJSSession(SCOPE)
    session.start(echo)
    assert await session.wait_open()
    assert await session.next_frame(30) == "o"
    assert await session.next_frame(30) == 'a["hello"]'
    assert await session.next_frame(0.01) == "h"  # nothing to say within the heartbeat period
    await session.deliver(["x"])
    assert await session.next_frame(30) == 'a["x"]'
    await session.deliver(["bye"])
    assert await frames_until(session, 'c[3000,"Go away!"]') == ['c[3000,"Go away!"]']
    assert await session.next_frame(30) == 'c[3000,"Go away!"]'  # for every later receiver
    assert session.task is not None
    await session.task


async def test_the_app_sees_the_browser_leave() -> None:
    session = SockJSSession(SCOPE)
    session.start(echo)
    assert await session.wait_open()
    session.end(1002, "Connection interrupted")
    assert session.task is not None
    await asyncio.wait_for(session.task, 30)  # its receive said disconnect
    assert await session.next_frame(30) == "o"
    assert await session.next_frame(30) == 'c[1002,"Connection interrupted"]'


async def test_a_refused_handshake() -> None:
    async def refuse(websocket: WebSocket) -> None:
        await websocket.close(1008)

    session = SockJSSession(SCOPE)
    session.start(refuse)
    assert not await session.wait_open()
    assert session.refused


async def test_an_app_waits_while_nobody_takes_its_messages() -> None:
    sent = 0

    async def chatty(websocket: WebSocket) -> None:
        nonlocal sent
        await websocket.accept()
        for _ in range(100):
            await websocket.send_text("x" * 10)
            sent += 1

    session = SockJSSession(SCOPE, max_pending_chars=50)
    session.start(chatty)
    assert await session.wait_open()
    for _ in range(20):
        await asyncio.sleep(0)
    assert sent == 5  # the sixth send waits for a receiver
    assert await session.next_frame(30) == "o"
    assert await session.next_frame(30) == "a[" + ",".join(['"xxxxxxxxxx"'] * 5) + "]"
    frames = await frames_until(session, 'c[1000,"Normal closure"]')
    assert sum(frame.count('"xxxxxxxxxx"') for frame in frames) == 95


async def test_session_table_forgets_a_session_without_a_receiver() -> None:
    table = SessionTable(disconnect_delay_s=0.01)
    session = SockJSSession(SCOPE)
    session.start(echo)
    table.add("s1", session)
    assert table.attach("s1", session)
    assert not table.attach("s1", session)  # one receiver at a time
    table.detach("s1", session)
    assert session.task is not None
    await asyncio.wait_for(session.task, 30)
    assert table.get("s1") is None and session.gone
