"""A bare SockJS client for protocol tests: session URLs, frames read off streaming responses, frame parsing."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from nbrelay.push.transports.sockjs.routes import SockJSEndpoint
from nbrelay.push.transports.sockjs.session import SockJSSession

LEGACY = "/sockjs/websocket"
V1 = "/sockjs/v1"


def session_url(server: Any, base: str = LEGACY) -> tuple[str, str]:
    """(url of a new session, its id)."""
    session_id = uuid.uuid4().hex
    return f"{server.url}{base}/000/{session_id}", session_id


def messages(frame: str) -> list[Any]:
    """The messages of an "a" frame, each parsed as JSON where it is JSON (the legacy "pong" is not)."""
    assert frame.startswith("a["), frame
    found = []
    for text in json.loads(frame[1:]):
        try:
            found.append(json.loads(text))
        except ValueError:
            found.append(text)
    return found


def endpoint(server: Any, base: str = LEGACY) -> SockJSEndpoint:
    for route in server.app.router.routes:
        if getattr(route, "path", None) == base:
            assert isinstance(route.app, SockJSEndpoint)
            return route.app
    raise AssertionError(f"no SockJS endpoint at {base}")


def server_session(server: Any, session_id: str, base: str = LEGACY) -> SockJSSession | None:
    return endpoint(server, base).sessions.get(session_id)


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    """Poll until `check()` is truthy (no timed assertion: a generous deadline only against hanging)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class FrameStream:
    """One streaming response, read by exact sizes or up to a delimiter."""

    def __init__(self, response: httpx.Response):
        self.response = response
        self._chunks: Iterator[bytes] = response.iter_raw()
        self._buffer = b""
        self.ended = False

    def _more(self) -> bool:
        try:
            self._buffer += next(self._chunks)
            return True
        except StopIteration:
            self.ended = True
            return False

    def read(self, size: int) -> str:
        while len(self._buffer) < size and self._more():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data.decode()

    def read_until(self, delimiter: str) -> str | None:
        """The text before the next delimiter (consumed); None when the response ended first."""
        mark = delimiter.encode()
        while mark not in self._buffer:
            if not self._more():
                return None
        data, _, self._buffer = self._buffer.partition(mark)
        return data.decode()

    def at_end(self) -> bool:
        """Whether the server ended the response (nothing left after what was read)."""
        return not self._buffer and not self._more()


def next_message(read_frame: Callable[[], str | None], wanted: Callable[[Any], bool]) -> Any:
    """Read frames until a message `wanted` accepts (heartbeats and other messages are skipped)."""
    while True:
        frame = read_frame()
        assert frame is not None, "the stream ended"
        if frame.startswith("a"):
            for message in messages(frame):
                if wanted(message):
                    return message
