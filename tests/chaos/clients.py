"""Push clients that are cut at random and come back: /ws, /sse and SockJS (xhr_streaming), each resuming only as
the protocol offers (the last id per stream, Last-Event-ID). Each keeps a Ledger of every event as it arrived, so
a test can count what was lost, duplicated or out of order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import ssl
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

RECONNECT_MAX_S = 2.0  # the backoff's ceiling: a restart should cost seconds, not the protocol's 20 s
PING_EVERY_S = 10.0  # well inside the server's client_idle_timeout_s (60 s)


def split_position(position: str) -> tuple[str, int]:
    epoch, _, offset = position.rpartition(":")
    return epoch, int(offset)


@dataclass
class Ledger:
    """What one client saw, across all its connections."""

    name: str
    transport: str  # ws, sse, sockjs
    via: str  # direct, nginx
    start: dict[str, str] = field(default_factory=dict)  # stream -> position at the first welcome
    last: dict[str, str] = field(default_factory=dict)  # stream -> the last id kept (what a resume sends)
    arrived: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # stream -> every event, as it came
    kept: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # what the protocol's dedupe keeps
    connects: int = 0
    cuts: int = 0
    unrecovered: list[dict[str, Any]] = field(default_factory=list)  # recovered: false answers
    closes: Counter[str] = field(default_factory=Counter)  # how connections ended, besides our cuts
    errors: list[str] = field(default_factory=list)

    def welcomed(self, welcome: dict[str, Any]) -> None:
        assert welcome.get("op") == "welcome", welcome
        self.connects += 1
        for stream, position in welcome["streams"].items():
            self.start.setdefault(stream, position)
            self.last.setdefault(stream, position)

    def event(self, event: dict[str, Any]) -> None:
        """Keep an event unless the protocol says drop it: offset not above the last one seen in the same epoch."""
        stream = event["stream"]
        self.arrived.setdefault(stream, []).append(event)
        epoch, offset = split_position(self.last.get(stream, ":0"))
        if event["epoch"] == epoch and event["offset"] <= offset:
            return
        self.kept.setdefault(stream, []).append(event)
        self.last[stream] = event["id"]

    def answer(self, message: dict[str, Any]) -> None:
        if message.get("recovered") is False:
            self.unrecovered.append(message)

    def caught_up(self, final: dict[str, str]) -> bool:
        return all(self.last.get(stream) == position for stream, position in final.items())


@dataclass
class Chaos:
    """What every client shares: where to connect, how often to be cut, when to stop."""

    base_url: str  # http(s)://host:port
    tls: ssl.SSLContext | None
    cut_mean_s: float  # mean time between cuts of one client's connection (exponential)
    cutting: bool = True  # the cuts stop once the publisher is done, so clients can catch up
    final: dict[str, dict[str, str]] = field(default_factory=dict)  # user -> stream -> last position, at the end
    done: asyncio.Event = field(default_factory=asyncio.Event)  # stop now, caught up or not

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1)

    def cut_after_s(self) -> float:
        return random.expovariate(1 / self.cut_mean_s) if self.cutting else 3600.0

    def finished(self, ledger: Ledger, user: str) -> bool:
        return self.done.is_set() or (user in self.final and ledger.caught_up(self.final[user]))


async def backoff(attempt: int) -> None:
    await asyncio.sleep(random.random() * min(RECONNECT_MAX_S, 0.05 * 2**attempt))


async def until_cut_or_done(chaos: Chaos, ledger: Ledger, user: str, work: Any) -> bool:
    """Run `work` (a connection's reading loop) until it ends, the cut comes, or the client is finished; True
    when it was cut by us."""
    task = asyncio.ensure_future(work)
    deadline = time.monotonic() + chaos.cut_after_s()
    try:
        while not task.done():
            if chaos.finished(ledger, user):
                return False
            if time.monotonic() >= deadline and chaos.cutting:
                ledger.cuts += 1
                return True
            await asyncio.wait({task}, timeout=0.1)
        task.result()
        return False
    finally:
        while not task.done():  # again and again: Python 3.11's wait_for may swallow a cancel that meets a result
            task.cancel()
            await asyncio.wait({task}, timeout=1)
        if not task.cancelled():
            task.exception()  # retrieved: the reason a connection ended is in its ledger already


# /ws --------------------------------------------------------------------------------------------------------------
async def ws_client(chaos: Chaos, ledger: Ledger, user: str, token: str) -> None:
    attempt = 0
    while not chaos.finished(ledger, user):
        try:
            async with connect(
                f"{chaos.ws_url}/ws?token={token}", ssl=chaos.tls, open_timeout=10, close_timeout=1, max_size=2**22
            ) as ws:
                cut = await until_cut_or_done(chaos, ledger, user, _ws_session(ws, ledger))
                if cut:
                    ws.transport.abort()  # no closing handshake: the TCP connection just goes
                attempt = 0
        except ConnectionClosed as closed:
            ledger.closes[str(closed.rcvd.code if closed.rcvd else "no close frame")] += 1
        except (OSError, TimeoutError, InvalidHandshake, InvalidStatus) as exc:
            ledger.closes[type(exc).__name__] += 1
        await backoff(attempt := attempt + 1)


async def _ws_session(ws: Any, ledger: Ledger) -> None:
    ledger.welcomed(json.loads(await ws.recv()))
    assert json.loads(await ws.recv())["op"] == "snapshot"
    for stream in ledger.start:
        await ws.send(json.dumps({"op": "subscribe", "stream": stream, "since": ledger.last[stream]}))
    pinged = time.monotonic()
    while True:
        message = {}
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PING_EVERY_S):
                message = json.loads(await ws.recv())
        if time.monotonic() - pinged > PING_EVERY_S:
            await ws.send('{"op":"ping"}')
            pinged = time.monotonic()
        _handle(ledger, message)


def _handle(ledger: Ledger, message: dict[str, Any]) -> None:
    op = message.get("op")
    if op == "event":
        ledger.event(message)
    elif op == "recovered":
        ledger.answer(message)
    elif op == "error":
        ledger.errors.append(json.dumps(message))


# /sse -------------------------------------------------------------------------------------------------------------
async def sse_client(chaos: Chaos, ledger: Ledger, user: str, token: str) -> None:
    """As a browser's EventSource: on reconnect, Last-Event-ID is the last `id:` it read, if it read one."""
    reader = _SseReader(ledger)
    attempt = 0
    async with httpx.AsyncClient(base_url=chaos.base_url, verify=chaos.tls or True, timeout=30) as http:
        while not chaos.finished(ledger, user):
            headers = {"Last-Event-ID": reader.last_id} if reader.last_id else {}
            try:
                async with http.stream("GET", "/sse", params={"token": token}, headers=headers) as response:
                    if response.status_code != 200:
                        ledger.closes[f"http {response.status_code}"] += 1
                    else:
                        await until_cut_or_done(chaos, ledger, user, reader.run(response))
                        attempt = 0
            except httpx.HTTPError as exc:
                ledger.closes[type(exc).__name__] += 1
            await backoff(attempt := attempt + 1)


class _SseReader:
    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.last_id: str | None = None

    async def run(self, response: httpx.Response) -> None:
        frame: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                if not line.startswith(":"):
                    name, _, value = line.partition(":")
                    frame[name] = value.removeprefix(" ")
                continue
            if "data" in frame:
                self._frame(frame)
            frame = {}
        self.ledger.closes["sse ended"] += 1

    def _frame(self, frame: dict[str, str]) -> None:
        data = json.loads(frame["data"])
        kind = frame.get("event")
        self.last_id = frame.get("id", self.last_id)  # EventSource keeps the id of any frame that has one
        if kind == "welcome":
            self.ledger.welcomed(data)
        elif kind == "recovered":
            self.ledger.answer(data)
        elif kind == "close":
            self.ledger.closes[f"sse close {data.get('code')}"] += 1
        elif kind is None:
            self.ledger.event(data)


# SockJS (protocol v1 over xhr_streaming + xhr_send) ---------------------------------------------------------------
async def sockjs_client(chaos: Chaos, ledger: Ledger, user: str, token: str) -> None:
    """As sockjs-client does: a streaming response that ends normally (its byte limit) is followed by another on
    the same session; one that breaks ends the session, and the application opens a new one and resumes."""
    attempt = 0
    async with httpx.AsyncClient(base_url=chaos.base_url, verify=chaos.tls or True, timeout=30) as http:
        session = f"/sockjs/v1/000/{uuid.uuid4().hex}"
        while not chaos.finished(ledger, user):
            reader = _SockJSReceiver(http, session, token, ledger)
            try:
                async with http.stream("POST", f"{session}/xhr_streaming", params={"token": token}) as response:
                    if response.status_code != 200:
                        ledger.closes[f"http {response.status_code}"] += 1
                    else:
                        cut = await until_cut_or_done(chaos, ledger, user, reader.run(response))
                        if not cut and reader.closed is None:
                            attempt = 0
                            continue  # the response's byte limit: the session goes on in the next one
            except httpx.HTTPError as exc:
                ledger.closes[type(exc).__name__] += 1
            session = f"/sockjs/v1/000/{uuid.uuid4().hex}"  # broken or closed: a new session, which resumes
            await backoff(attempt := attempt + 1)


class _SockJSReceiver:
    def __init__(self, http: httpx.AsyncClient, session: str, token: str, ledger: Ledger):
        self.http, self.session, self.token, self.ledger = http, session, token, ledger
        self.closed: str | None = None
        self.pinged = time.monotonic()

    async def send(self, *messages: dict[str, Any]) -> None:
        body = json.dumps([json.dumps(m) for m in messages])
        answer = await self.http.post(f"{self.session}/xhr_send", params={"token": self.token}, content=body)
        if answer.status_code != 204:
            raise httpx.HTTPError(f"xhr_send answered {answer.status_code}")

    async def run(self, response: httpx.Response) -> None:
        buffer = ""
        async for chunk in response.aiter_text():
            buffer += chunk
            *frames, buffer = buffer.split("\n")
            for frame in frames:
                await self._frame(frame)
            if time.monotonic() - self.pinged > PING_EVERY_S:
                self.pinged = time.monotonic()
                await self.send({"op": "ping"})

    async def _frame(self, frame: str) -> None:
        if frame.startswith("c"):
            self.closed = frame
            self.ledger.closes[f"sockjs {frame[:40]}"] += 1
        elif frame.startswith("a"):
            for text in json.loads(frame[1:]):
                message = json.loads(text)
                if message.get("op") == "welcome":
                    self.ledger.welcomed(message)
                    since = [{"op": "subscribe", "stream": s, "since": p} for s, p in self.ledger.last.items()]
                    await self.send(*since)
                else:
                    _handle(self.ledger, message)


CLIENTS = {"ws": ws_client, "sse": sse_client, "sockjs": sockjs_client}
