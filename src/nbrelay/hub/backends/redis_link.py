"""A node's connection to Redis for the redis:// hub, which every event crosses twice: its publish (a Lua script)
and its arrival (a pub/sub message). Commands are pipelined — written together at the end of the loop's turn, their
replies matched in order — with one timer per connection rather than one per command; pub/sub messages are handed
to a callback as they are read, with no task in between. In RESP3 (redis_wire.py) a message is a push, told apart
from a reply by its type, so one connection carries both: the script's reply and its own message come back in one
read. redis-py's client, whose per-command machinery (a pool checkout, a retry wrapper, timeouts around every read
and write, a task switch per message) cost more CPU than the commands, only reads the URL (docs/benchmarks.md).

A Link never reconnects: when it is lost, every command waiting on it fails with ConnectionError (TimeoutError
when Redis stopped answering) and its owner opens a new one.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio.connection import parse_url as redis_url_parts

from nbrelay.hub.backends.redis_wire import ProtocolError, Push, Reader, Reply, ReplyError, pack

OnPush = Callable[[Reply], None]


@dataclass(frozen=True)
class Address:
    """Where Redis is and how to log in, as redis-py reads a redis:// or rediss:// URL."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: ssl.SSLContext | None

    @classmethod
    def from_url(cls, url: str) -> Address:
        parts: dict[str, Any] = dict(redis_url_parts(url))
        tls = None
        if url.startswith("rediss://"):
            tls = ssl.create_default_context(cafile=parts.get("ssl_ca_certs"))
            if parts.get("ssl_certfile"):
                tls.load_cert_chain(parts["ssl_certfile"], parts.get("ssl_keyfile"))
            if str(parts.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
                tls.check_hostname = False
                tls.verify_mode = ssl.CERT_NONE
            elif str(parts.get("ssl_check_hostname", "true")).lower() in ("false", "0", "no"):
                tls.check_hostname = False
        return cls(
            host=str(parts.get("host") or "localhost"),
            port=int(parts.get("port") or 6379),
            db=int(parts.get("db") or 0),
            username=parts.get("username"),
            password=parts.get("password"),
            tls=tls,
        )


class Link(asyncio.Protocol):
    """A connection, once open (Link.open): `call` sends a command and returns the future of its reply; pushes
    (pub/sub messages and confirmations) go to `on_push`."""

    def __init__(self, timeout_s: float, on_push: OnPush | None = None):
        self.timeout_s = timeout_s
        self._on_push = on_push
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._reader = Reader()
        self._waiting: deque[tuple[asyncio.Future[Reply], float]] = deque()  # (reply, deadline), in send order
        self._out: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._error: Exception | None = None
        self._lost: asyncio.Future[Exception] = self._loop.create_future()

    @classmethod
    async def open(cls, address: Address, *, name: str, timeout_s: float, on_push: OnPush | None = None) -> Link:
        """Connect, log in, select the database and name the connection (CLIENT LIST shows whose it is).
        ConnectionError (or OSError, TimeoutError) when any of it fails."""
        link = cls(timeout_s, on_push)
        connecting = asyncio.get_running_loop().create_connection(
            lambda: link,
            address.host,
            address.port,
            ssl=address.tls,
            server_hostname=address.host if address.tls else None,
        )
        await asyncio.wait_for(connecting, timeout_s)
        # RESP3 (Redis 6 and newer): pub/sub messages come as pushes, told apart from replies by their type, so one
        # connection carries both. HELLO logs in and names the connection in the same round trip.
        hello: list[str | int] = ["HELLO", 3]
        if address.password is not None:
            hello += ["AUTH", address.username or "default", address.password]
        steps: list[list[str | int]] = [[*hello, "SETNAME", name]]
        if address.db:
            steps.append(["SELECT", address.db])
        replies = [link.call(*step) for step in steps]
        try:
            for step, reply in zip(steps, replies, strict=True):
                try:
                    await reply
                except ReplyError as exc:  # the message only: HELLO's arguments hold the password
                    old = step[0] == "HELLO" and exc.code in ("ERR", "NOPROTO") and "AUTH" not in str(exc)
                    hint = " (the hub needs Redis 6 or newer, for RESP3)" if old else ""
                    raise ConnectionError(f"Redis refused {step[0]}: {exc}{hint}") from None
        except BaseException:
            link.close()
            for reply in replies:  # the steps after the one that failed fail with the connection: nobody awaits them
                if reply.done() and not reply.cancelled():
                    reply.exception()
            raise
        return link

    @property
    def is_open(self) -> bool:
        return self._error is None and self._transport is not None

    def call(self, *args: str | bytes | int) -> asyncio.Future[Reply]:
        """Send a command; the future gets its reply (ReplyError as the exception when Redis refuses it)."""
        reply: asyncio.Future[Reply] = self._loop.create_future()
        if self._error is not None:
            reply.set_exception(self._error)
            return reply
        deadline = self._loop.time() + self.timeout_s
        self._waiting.append((reply, deadline))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check_deadline)
        self.send(*args)
        return reply

    def send(self, *args: str | bytes | int) -> None:
        """Send a command that has no reply but pushes (SUBSCRIBE, UNSUBSCRIBE: their confirmations go to on_push)."""
        if self._error is not None:
            raise self._error
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(pack(args))

    async def wait_lost(self) -> Exception:
        """Wait until the connection is lost (or closed); why."""
        return await asyncio.shield(self._lost)

    def close(self) -> None:
        self._fail(ConnectionError("the connection to Redis was closed"))
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol ------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            replies = self._reader.replies()
        except ProtocolError as exc:
            self._abort(ConnectionError(f"Redis sent what is not RESP: {exc}"))
            return
        for reply in replies:
            if isinstance(reply, Push):
                if self._on_push is not None:
                    self._on_push(reply)
            elif self._waiting:
                future, _ = self._waiting.popleft()
                if future.done():  # its caller gave up (cancelled)
                    continue
                if isinstance(reply, ReplyError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
            else:
                self._abort(ConnectionError(f"Redis sent a reply nobody asked for: {reply!r:.80}"))
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"lost the connection to Redis: {exc or 'closed by Redis'}"))

    # inside ----------------------------------------------------------------------------------------------------
    def _flush(self) -> None:
        if self._out and self._transport is not None and self._error is None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _check_deadline(self) -> None:
        """The one timer: fails the connection when its oldest command went unanswered for timeout_s."""
        self._timer = None
        if not self._waiting or self._error is not None:
            return
        deadline = self._waiting[0][1]
        if deadline <= self._loop.time():
            self._abort(TimeoutError(f"Redis did not answer in {self.timeout_s:g} s"))
        else:
            self._timer = self._loop.call_at(deadline, self._check_deadline)

    def _abort(self, error: Exception) -> None:
        self._fail(error)
        if self._transport is not None:
            self._transport.abort()

    def _fail(self, error: Exception) -> None:
        """The end of the connection: every command waiting fails with `error` (the first reason given)."""
        if self._error is None:
            self._error = error
            if not self._lost.done():
                self._lost.set_result(error)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._out.clear()
        while self._waiting:
            future, _ = self._waiting.popleft()
            if not future.done():
                future.set_exception(self._error)
