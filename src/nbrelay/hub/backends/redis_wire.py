"""RESP2, the Redis wire protocol, with no I/O: commands to bytes, bytes to replies. The hub's hot path speaks it
over its own connections (hub/backends/redis_link.py); tests feed it bytes.

Replies as they come out of a Reader:
    +simple string   str
    -error           ReplyError (a value, not raised: the caller decides)
    :integer         int
    $bulk string     bytes, or None for $-1
    *array           list of replies, or None for *-1
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Reply = Any  # str | bytes | int | None | ReplyError | list[Reply]

_CRLF = b"\r\n"
# A reply bigger than this is not one the hub asked for: the stream is out of step (or not Redis).
MAX_BULK = 512 * 1024 * 1024


class ReplyError(Exception):
    """A command that Redis refused ("-ERR ...", "-NOSCRIPT ...", ...): its message."""

    @property
    def code(self) -> str:
        return str(self).partition(" ")[0]


class ProtocolError(Exception):
    """Bytes that are not RESP: the connection cannot be trusted any more."""


def pack(args: Sequence[str | bytes | int]) -> bytes:
    """One command as RESP: an array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Incomplete(Exception):
    """The buffer ends inside a reply: wait for more bytes."""


class Reader:
    """Bytes in (feed), whole replies out (replies), in order. What follows the last whole reply is kept for the
    next feed."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def replies(self) -> list[Reply]:
        """Every whole reply fed since the last call, in order. ProtocolError for bytes that are not RESP."""
        buffer = self._buffer
        out: list[Reply] = []
        used = 0
        try:
            while used < len(buffer):
                reply, used = self._parse(buffer, used)
                out.append(reply)
        except _Incomplete:
            pass
        del buffer[:used]
        return out

    def _parse(self, buffer: bytearray, at: int) -> tuple[Reply, int]:
        end = buffer.find(_CRLF, at)
        if end < 0:
            if len(buffer) - at > 64 * 1024:
                raise ProtocolError("a reply line longer than 64 KiB")
            raise _Incomplete
        kind, line = buffer[at], bytes(buffer[at + 1 : end])
        after = end + 2
        if kind == 0x24:  # $
            size = _number(line)
            if size < 0:
                return None, after
            if size > MAX_BULK:
                raise ProtocolError(f"a bulk string of {size} bytes")
            if len(buffer) < after + size + 2:
                raise _Incomplete
            if buffer[after + size : after + size + 2] != _CRLF:
                raise ProtocolError("a bulk string without its CRLF")
            return bytes(buffer[after : after + size]), after + size + 2
        if kind == 0x2A:  # *
            count = _number(line)
            if count < 0:
                return None, after
            items = []
            for _ in range(count):
                item, after = self._parse(buffer, after)
                items.append(item)
            return items, after
        if kind == 0x3A:  # :
            return _number(line), after
        if kind == 0x2B:  # +
            return line.decode(errors="replace"), after
        if kind == 0x2D:  # -
            return ReplyError(line.decode(errors="replace")), after
        raise ProtocolError(f"unexpected reply type {chr(kind)!r}")


def _number(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"not a number: {line[:40]!r}") from None
