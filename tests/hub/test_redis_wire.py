"""RESP without I/O: commands packed as Redis reads them, replies (RESP2 and RESP3) read back from bytes however they
are cut."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbrelay.hub.backends.redis_wire import ProtocolError, Push, Reader, ReplyError, pack

# Every kind of reply, nested, as Redis sends them: a pub/sub message, a script's mixed array, nils, an error.
WIRE = (
    b'*3\r\n$7\r\nmessage\r\n$14\r\nnbrelay:hub:u1\r\n$17\r\nab12:7 {"a":"\xc3\xa9"}\r\n'
    b"*4\r\n$4\r\nab12\r\n:7\r\n*2\r\n$-1\r\n*0\r\n*-1\r\n"
    b"+OK\r\n"
    b"-NOSCRIPT No matching script. Please use EVAL.\r\n"
    b":-42\r\n"
    b"$0\r\n\r\n"
    b"$4\r\na\r\nb\r\n"  # a bulk string holds CRLF as it is
    # RESP3: a push, a map (HELLO's reply), null, booleans, a double, a big number, verbatim text, a blob error,
    # a set, and attributes before a reply (skipped)
    b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$3\r\nhey\r\n"
    b"%2\r\n$5\r\nproto\r\n:3\r\n$4\r\nrole\r\n$6\r\nmaster\r\n"
    b"_\r\n#t\r\n#f\r\n,3.25\r\n,-inf\r\n(3492890328409238509324850943850943825024385\r\n"
    b"=8\r\ntxt:some\r\n!11\r\nSYNTAX oops\r\n~2\r\n:1\r\n:2\r\n"
    b"|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*1\r\n:9\r\n"
)
REPLIES = [
    [b"message", b"nbrelay:hub:u1", 'ab12:7 {"a":"é"}'.encode()],
    [b"ab12", 7, [None, []], None],
    "OK",
    ("NOSCRIPT", "NOSCRIPT No matching script. Please use EVAL."),
    -42,
    b"",
    b"a\r\nb",
    [b"message", b"c", b"hey"],
    {b"proto": 3, b"role": b"master"},
    None,
    True,
    False,
    3.25,
    float("-inf"),
    3492890328409238509324850943850943825024385,
    b"some",
    ("SYNTAX", "SYNTAX oops"),
    [1, 2],
    [9],
]


def as_comparable(replies: list[object]) -> list[object]:
    return [(r.code, str(r)) if isinstance(r, ReplyError) else r for r in replies]


def test_every_kind_of_reply_is_read() -> None:
    reader = Reader()
    reader.feed(WIRE)
    replies = reader.replies()
    assert as_comparable(replies) == REPLIES
    assert [isinstance(reply, Push) for reply in replies] == [reply == [b"message", b"c", b"hey"] for reply in REPLIES]
    assert reader.replies() == []  # each reply once


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64])
def test_replies_cut_anywhere_come_out_whole_and_in_order(step: int) -> None:
    reader = Reader()
    replies: list[object] = []
    for at in range(0, len(WIRE), step):
        reader.feed(WIRE[at : at + step])
        replies += reader.replies()
    assert as_comparable(replies) == REPLIES


def test_commands_are_arrays_of_bulk_strings() -> None:
    assert pack(["EVALSHA", "ab", 2, b"k\r\n", "é"]) == (
        b"*5\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n2\r\n$3\r\nk\r\n\r\n$2\r\n\xc3\xa9\r\n"
    )
    reader = Reader()
    reader.feed(pack(["SET", "key", "value with\r\nnewline"]))
    assert reader.replies() == [[b"SET", b"key", b"value with\r\nnewline"]]  # what Redis reads is what was meant


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        (b"@5\r\nhello\r\n", "unexpected reply type '@'"),
        (b"$x\r\n", "not a number"),
        (b"$3\r\nabcd\r\n", "without its CRLF"),
        (b"*1\r\n:1x\r\n", "not a number"),
        (b"$999999999999\r\n", "a bulk string of 999999999999 bytes"),
        (b"+" + b"x" * 70_000, "longer than 64 KiB"),
    ],
)
def test_what_is_not_resp_is_refused(wire: bytes, message: str) -> None:
    reader = Reader()
    reader.feed(b":1\r\n" + wire)
    with pytest.raises(ProtocolError, match=message):
        reader.replies()


def test_an_unfinished_reply_waits_for_its_end() -> None:
    reader = Reader()
    reader.feed(b"*2\r\n$5\r\nhel")
    assert reader.replies() == []
    reader.feed(b"lo\r\n:")
    assert reader.replies() == []
    reader.feed(b"3\r\n")
    assert reader.replies() == [[b"hello", 3]]


# Any reply, however it is cut --------------------------------------------------------------------------------
def encode(value: object) -> bytes:
    """A reply as Redis writes it (the test's own encoder, independent of the Reader)."""
    if isinstance(value, Push):
        return b">%d\r\n" % len(value) + b"".join(map(encode, value))
    if isinstance(value, list):
        return b"*%d\r\n" % len(value) + b"".join(map(encode, value))
    if isinstance(value, bool):
        return b"#t\r\n" if value else b"#f\r\n"
    if isinstance(value, int):
        return b":%d\r\n" % value
    if isinstance(value, bytes):
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if isinstance(value, str):
        return b"+%s\r\n" % value.encode()
    if isinstance(value, ReplyError):
        return b"-%s\r\n" % str(value).encode()
    assert value is None
    return b"_\r\n"


line_text = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20)
replies = st.recursive(
    st.none() | st.booleans() | st.integers() | st.binary(max_size=40) | line_text,
    lambda children: st.lists(children, max_size=4) | st.lists(children, max_size=4).map(Push),
    max_leaves=12,
)


def tagged(value: object) -> object:
    """The value with every aggregate marked push or array (list equality alone does not tell them apart)."""
    if isinstance(value, list):
        return ("push" if isinstance(value, Push) else "array", [tagged(item) for item in value])
    return (type(value).__name__, value)


@given(st.lists(replies, min_size=1, max_size=6), st.lists(st.integers(1, 30), min_size=1))
@settings(max_examples=300, deadline=None)
def test_any_replies_cut_anywhere_come_out_as_sent(sent: list[object], cuts: list[int]) -> None:
    wire = b"".join(map(encode, sent))
    reader = Reader()
    got: list[object] = []
    at = 0
    for size in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        reader.feed(wire[at : at + size])
        at += size
        got += reader.replies()
    reader.feed(wire[at:])
    got += reader.replies()
    assert tagged(got) == tagged(sent)
