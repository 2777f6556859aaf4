"""RFC 6455 frames as a server reads and writes them once the handshake is answered, sans I/O.

ws_direct.py keeps no parser object per connection: `read_frames` takes the bytes at hand (an incomplete frame
from the last read, then the new data) and returns the whole frames and the bytes of the next, incomplete one.
No extension is ever negotiated (the server offers none), so the reserved bits must be 0; client frames must be
masked; control frames are final and at most 125 bytes. A breach raises `FrameError` with the close code it calls
for (1002 protocol error, 1007 bad UTF-8, 1009 too big).
"""

from __future__ import annotations

from typing import NamedTuple

try:  # websockets' C unmasking, where it was built
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover
    from websockets.utils import apply_mask

from nbrelay.models import server_frame

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_OPCODES = frozenset((CONT, TEXT, BINARY, CLOSE, PING, PONG))
NO_STATUS = 1005  # a close frame without a code (RFC 6455 7.4.1); never sent as a code
_UNSENDABLE = frozenset((1004, 1005, 1006, 1015))


class FrameError(Exception):
    """The peer broke the framing: close with `code`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Frame(NamedTuple):
    opcode: int
    fin: bool
    payload: bytes


def read_frames(data: bytes, max_size: int) -> tuple[list[Frame], bytes]:
    """The whole client frames at the start of `data`, and what is left (the start of the next frame)."""
    frames: list[Frame] = []
    at, end = 0, len(data)
    while end - at >= 2:
        first, second = data[at], data[at + 1]
        if first & 0x70:
            raise FrameError(1002, "reserved bits set: no extension was negotiated")
        opcode = first & 0x0F
        if opcode not in _OPCODES:
            raise FrameError(1002, f"unknown opcode {opcode:#x}")
        if not second & 0x80:
            raise FrameError(1002, "a client's frames must be masked")
        size, head = second & 0x7F, at + 2
        if size == 126:
            if end - head < 2:
                break
            size, head = int.from_bytes(data[head : head + 2], "big"), head + 2
        elif size == 127:
            if end - head < 8:
                break
            size, head = int.from_bytes(data[head : head + 8], "big"), head + 8
        fin = bool(first & 0x80)
        if opcode >= CLOSE and (size > 125 or not fin):
            raise FrameError(1002, "a control frame must be final and at most 125 bytes")
        if size > max_size:
            raise FrameError(1009, f"frame over {max_size} bytes")
        start = head + 4
        if end - start < size:
            break
        frames.append(Frame(opcode, fin, apply_mask(data[start : start + size], data[head:start])))
        at = start + size
    return frames, data[at:]


def close_payload_code(payload: bytes) -> tuple[int, str]:
    """The code and reason of a received close frame (NO_STATUS when it has none)."""
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise FrameError(1002, "a close frame's code is 2 bytes")
    code = int.from_bytes(payload[:2], "big")
    if not (1000 <= code < 5000) or code in _UNSENDABLE or 1016 <= code < 3000:
        raise FrameError(1002, f"invalid close code {code}")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameError(1007, "a close reason must be UTF-8") from None
    return code, reason


def close_frame(code: int, reason: str) -> bytes:
    """A close frame with `code` and `reason` (cut to fit the 125 bytes of a control frame)."""
    data = reason.encode()[:123]
    while True:  # a cut inside a UTF-8 sequence would make the reason invalid: cut before it
        try:
            data.decode()
            break
        except UnicodeDecodeError:
            data = data[:-1]
    return server_frame(CLOSE, code.to_bytes(2, "big") + data)
