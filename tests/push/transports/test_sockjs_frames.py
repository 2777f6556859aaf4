"""SockJS framing and the checks on what clients send: pure functions, fed directly."""

from __future__ import annotations

import json

import pytest

from nbrelay.push.transports.sockjs.frames import (
    ANOTHER_CONNECTION,
    RECEIVERS,
    ProtocolError,
    check_callback,
    close_frame,
    decode_messages,
    jsonp_payload,
    messages_frame,
    quote,
)


def test_frames() -> None:
    assert messages_frame(['{"msgType":"0"}', "pong"]) == 'a["{\\"msgType\\":\\"0\\"}","pong"]'
    assert close_frame(*ANOTHER_CONNECTION) == 'c[2010,"Another connection still open"]'
    assert close_frame(3000, "Go away!") == 'c[3000,"Go away!"]'


def test_characters_browsers_mangle_are_escaped() -> None:
    text = "é\u2028\u200d\ufeff\uffff\x00\ud800"
    quoted = quote(text)
    assert quoted == '"é\\u2028\\u200d\\ufeff\\uffff\\u0000\\ud800"'
    assert quoted.isascii() is False  # ordinary non-ASCII text stays as it is
    assert json.loads(quoted) == text


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("", "Payload expected."),
        ('["a', "Broken JSON encoding."),
        ("{}", "Payload expected."),
        ("[1]", "Payload expected."),
    ],
)
def test_bad_payloads(body: str, error: str) -> None:
    with pytest.raises(ProtocolError, match=error.replace(".", r"\.")):
        decode_messages(body)


def test_payloads() -> None:
    assert decode_messages('["a","b"]') == ["a", "b"]
    assert decode_messages('"a"') == ["a"]
    assert decode_messages("[]") == []
    form = "application/x-www-form-urlencoded"
    assert jsonp_payload(b"d=%5B%22x%22%5D", form) == '["x"]'
    assert jsonp_payload(b"p=p", form) == ""
    assert jsonp_payload(b'["%61bc"]', "text/plain") == '["%61bc"]'


def test_callbacks() -> None:
    assert check_callback("_jp.a1b2c3") == "_jp.a1b2c3"
    with pytest.raises(ProtocolError, match='"callback" parameter required'):
        check_callback(None)
    for bad in ("alert(1)", "a b", "x;y", "</script>"):
        with pytest.raises(ProtocolError, match='invalid "callback" parameter'):
            check_callback(bad)


def test_transport_framing() -> None:
    assert RECEIVERS["xhr"].wrap("o", "") == "o\n"
    assert RECEIVERS["xhr_streaming"].prelude("") == "h" * 2048 + "\n"
    assert RECEIVERS["eventsource"].prelude("") + RECEIVERS["eventsource"].wrap("o", "") == "\r\ndata: o\r\n\r\n"
    assert RECEIVERS["jsonp"].wrap('a["x"]', "cb") == 'cb("a[\\"x\\"]");\r\n'
    assert RECEIVERS["htmlfile"].wrap("o", "cb") == '<script>\np("o");\n</script>\r\n'
    prelude = RECEIVERS["htmlfile"].prelude("cb")
    assert len(prelude) > 1024 and prelude.endswith("\r\n\r\n") and "var c = parent.cb;" in prelude
