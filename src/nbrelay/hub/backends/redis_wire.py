"""RESP, the Redis wire protocol (RESP3, and RESP2, its subset), with no I/O: commands to bytes, bytes to replies.
The hub's hot path speaks it over its own connection (hub/backends/redis_link.py); tests feed it bytes.

Replies as they come out of a Reader:
    +simple string       str
    -error, !blob error  ReplyError (a value, not raised: the caller decides)
    :integer, (big       int
    $bulk, =verbatim     bytes (verbatim without its "txt:"), None for $-1
    *array, ~set         list of replies, None for *-1
    >push                Push (a list): out-of-band data, such as a pub/sub message
    %map                 dict
    _null                None
    #boolean             bool
    ,double              float
    |attributes          skipped: the reply after them comes out
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


class Push(list[Any]):
    """Data Redis sends on its own (RESP3 ">"), not the reply to a command: a pub/sub message or confirmation."""


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
        if kind in _BLOBS:  # $ = !
            size = _number(line)
            if size < 0:
                return None, after
            if size > MAX_BULK:
                raise ProtocolError(f"a bulk string of {size} bytes")
            if len(buffer) < after + size + 2:
                raise _Incomplete
            if buffer[after + size : after + size + 2] != _CRLF:
                raise ProtocolError("a bulk string without its CRLF")
            blob = bytes(buffer[after : after + size])
            if kind == 0x3D:  # =: verbatim, "txt:" or "mkd:" first
                blob = blob[4:]
            elif kind == 0x21:  # !: an error, as a blob
                return ReplyError(blob.decode(errors="replace")), after + size + 2
            return blob, after + size + 2
        if kind in _AGGREGATES:  # * > ~ % |
            count = _number(line)
            if count < 0:
                return None, after
            items = Push() if kind == 0x3E else []
            for _ in range(count * 2 if kind in _MAPS else count):
                item, after = self._parse(buffer, after)
                items.append(item)
            if kind == 0x7C:  # |: attributes of the reply that follows, which the hub has no use for
                return self._parse(buffer, after)
            if kind == 0x25:  # %
                return dict(zip(items[::2], items[1::2], strict=True)), after
            return items, after
        if kind == 0x3A or kind == 0x28:  # : (
            return _number(line), after
        if kind == 0x2B:  # +
            return line.decode(errors="replace"), after
        if kind == 0x2D:  # -
            return ReplyError(line.decode(errors="replace")), after
        if kind == 0x5F:  # _
            return None, after
        if kind == 0x23:  # #
            return line == b"t", after
        if kind == 0x2C:  # ,
            try:
                return float(line), after
            except ValueError:
                raise ProtocolError(f"not a number: {line[:40]!r}") from None
        raise ProtocolError(f"unexpected reply type {chr(kind)!r}")


_BLOBS = frozenset(b"$=!")
_AGGREGATES = frozenset(b"*>~%|")
_MAPS = frozenset(b"%|")


def _number(line: bytes) -> int:
    try:
        return int(line)
    except ValueError:
        raise ProtocolError(f"not a number: {line[:40]!r}") from None
