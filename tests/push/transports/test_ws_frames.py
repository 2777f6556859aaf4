"""The server's RFC 6455 frame reader and writers (transports/ws_frames.py), checked against websockets' own
frame codec: whole and split frames, every length encoding, and each framing fault with the close code it calls
for."""

from __future__ import annotations

import os

import pytest
from websockets.frames import Close as WsClose
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.streams import StreamReader

from nbrelay.push.transports.ws_frames import (
    CLOSE,
    CONT,
    NO_STATUS,
    PING,
    TEXT,
    Frame,
    FrameError,
    close_frame,
    close_payload_code,
    read_frames,
)

MAX = 65_536


def client_frame(opcode: Opcode, data: bytes, fin: bool = True) -> bytes:
    """A frame as a client sends it (masked with a random key), made by websockets."""
    return WsFrame(opcode, data, fin=fin).serialize(mask=True)


def test_frames_of_every_length_encoding_read_back_as_sent() -> None:
    payloads = [b"", b"x" * 125, b"y" * 126, b"z" * 65_535, b"w" * 65_536, os.urandom(1000)]
    data = b"".join(client_frame(Opcode.TEXT, payload) for payload in payloads)
    frames, rest = read_frames(data, 1 << 20)
    assert [frame.payload for frame in frames] == payloads and rest == b""
    assert all(frame.opcode == TEXT and frame.fin for frame in frames)


@pytest.mark.parametrize("cut", [1, 2, 3, 5, 9, 13, 100])
def test_a_frame_split_anywhere_waits_for_its_end(cut: int) -> None:
    whole = client_frame(Opcode.TEXT, b"a" * 200) + client_frame(Opcode.PING, b"hi")
    frames, rest = read_frames(whole[:cut], MAX)
    assert frames == [] and rest == whole[:cut]
    frames, rest = read_frames(rest + whole[cut:], MAX)
    assert frames == [Frame(TEXT, True, b"a" * 200), Frame(PING, True, b"hi")] and rest == b""


def test_fragments_keep_their_opcode_and_fin() -> None:
    data = client_frame(Opcode.TEXT, b"ab", fin=False) + client_frame(Opcode.CONT, b"cd")
    frames, _ = read_frames(data, MAX)
    assert frames == [Frame(TEXT, False, b"ab"), Frame(CONT, True, b"cd")]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (bytes([0x81, 0x02]) + b"hi", 1002),  # not masked
        (bytes([0xC1, 0x80]) + b"\x00" * 4, 1002),  # RSV1 without an extension
        (bytes([0x83, 0x80]) + b"\x00" * 4, 1002),  # opcode 3 is reserved
        (bytes([0x09, 0x80]) + b"\x00" * 4, 1002),  # a fragmented ping
        (bytes([0x89, 0xFE, 0x00, 0x7E]) + b"\x00" * 4 + b"p" * 126, 1002),  # a ping over 125 bytes
        (bytes([0x81, 0xFF]) + (1 << 20).to_bytes(8, "big"), 1009),  # too big, refused from its header alone
    ],
    ids=["unmasked", "rsv1", "reserved-opcode", "fragmented-ping", "long-ping", "too-big"],
)
def test_framing_faults_raise_the_close_code_they_call_for(data: bytes, code: int) -> None:
    with pytest.raises(FrameError) as fault:
        read_frames(data, MAX)
    assert fault.value.code == code


def test_close_payloads() -> None:
    assert close_payload_code(b"") == (NO_STATUS, "")
    assert close_payload_code(WsClose(1000, "bye").serialize()) == (1000, "bye")
    assert close_payload_code(WsClose(4012, "").serialize()) == (4012, "")
    for bad in (b"\x03", (1005).to_bytes(2, "big"), (999).to_bytes(2, "big"), (2000).to_bytes(2, "big")):
        with pytest.raises(FrameError) as fault:
            close_payload_code(bad)
        assert fault.value.code == 1002
    with pytest.raises(FrameError) as fault:
        close_payload_code((1000).to_bytes(2, "big") + b"\xff")
    assert fault.value.code == 1007


def test_close_frames_parse_with_websockets_and_keep_utf8_whole_when_cut() -> None:
    reason = "é" * 100  # 200 bytes: cut to fit 125, never inside a character
    reader = StreamReader()
    reader.feed_data(close_frame(4008, reason))
    parser = WsFrame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.opcode is Opcode.CLOSE and len(frame.data) <= 125
    close = WsClose.parse(frame.data)
    assert close.code == 4008 and reason.startswith(close.reason) and close.reason
    assert close_frame(1000, "")[0] == 0x80 | CLOSE
