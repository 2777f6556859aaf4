"""SockJS 0.3.3 framing, with no I/O: the frames (o, h, a[…], c[code, reason]), how each HTTP transport wraps
them, and the checks on what clients send (payloads, JSONP callback names), with the protocol's error texts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from nbrelay.models import compact_json

OPEN = "o"
HEARTBEAT = "h"
ANOTHER_CONNECTION = (2010, "Another connection still open")
INTERRUPTED = (1002, "Connection interrupted")

# JSON escapes control characters; the protocol also wants these escaped, as browsers mangle them (a BOM may be
# eaten, and lone surrogates cannot be sent as UTF-8 at all).
_SERVER_ESCAPES = re.compile("[\u200c-\u200f\u2028-\u202f\u2060-\u206f\ufeff\ufff0-\uffff\ud800-\udfff]")
_CALLBACK = re.compile(r"^[A-Za-z0-9_.]+$")


def quote(value: Any) -> str:
    """JSON text with the characters SockJS clients need escaped written as \\uXXXX."""
    return _SERVER_ESCAPES.sub(lambda m: f"\\u{ord(m.group()):04x}", compact_json(value))


# In a script of an HTML page, '</script>' (any case) would end the script and '<!--' change how it is parsed: the
# HTML-bound transports write '<', '>' and '&' of the quoted frame as JavaScript escapes, which only a string
# literal can hold (JSON text has those characters nowhere else), so the frame reads the same and nothing a
# notebook writes into a message becomes markup of the service's origin.
_HTML_SPECIAL = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def script_quote(value: Any) -> str:
    """`quote(value)` safe inside an HTML <script> element."""
    return quote(value).translate(_HTML_SPECIAL)


def messages_frame(texts: list[str]) -> str:
    return "a" + quote(texts)


def close_frame(code: int, reason: str) -> str:
    return "c" + quote([code, reason])


def is_close(frame: str) -> bool:
    return frame.startswith("c")


class ProtocolError(ValueError):
    """A request SockJS answers with 500 and this text (the protocol's own wording)."""


def decode_messages(body: str) -> list[str]:
    """Client messages: a JSON array of strings (or one JSON string, as some WebSocket clients send)."""
    if not body:
        raise ProtocolError("Payload expected.")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        raise ProtocolError("Broken JSON encoding.") from None
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProtocolError("Payload expected.")
    return value


def jsonp_payload(body: bytes, content_type: str) -> str:
    """jsonp_send carries its messages in a form field `d`, or as the raw body."""
    text = body.decode("utf-8", errors="replace")
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        return parse_qs(text).get("d", [""])[0]
    return text


def check_callback(callback: str | None) -> str:
    """The JSONP/htmlfile callback is written into a script: letters, digits, '_' and '.' only."""
    if not callback:
        raise ProtocolError('"callback" parameter required')
    if not _CALLBACK.match(callback):
        raise ProtocolError('invalid "callback" parameter')
    return callback


_HTMLFILE_HEAD = """<!doctype html>
<html><head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
</head><body><h2>Don't panic!</h2>
  <script>
    document.domain = document.domain;
    var c = parent.{callback};
    c.start();
    function p(d) {{c.message(d);}};
    window.onload = function() {{c.stop();}};
  </script>"""


def _htmlfile_prelude(callback: str) -> str:
    head = _HTMLFILE_HEAD.format(callback=callback)
    return head + " " * max(0, 1025 - len(head)) + "\r\n\r\n"  # over 1 KiB, or some browsers wait for more


@dataclass(frozen=True, slots=True)
class HttpTransport:
    """How one HTTP receiving transport carries frames: content type, prelude, framing, polling or streaming."""

    content_type: str
    streaming: bool
    needs_callback: bool = False
    policy: str = ""  # a Content-Security-Policy for a response the browser reads as a page

    def prelude(self, callback: str) -> str:
        return ""

    def wrap(self, frame: str, callback: str) -> str:
        return frame + "\n"


class _XhrStreaming(HttpTransport):
    def prelude(self, callback: str) -> str:
        return "h" * 2048 + "\n"  # browsers show nothing of a response before its first 2 KiB


class _EventSource(HttpTransport):
    def prelude(self, callback: str) -> str:
        return "\r\n"

    def wrap(self, frame: str, callback: str) -> str:
        return f"data: {frame}\r\n\r\n"


class _Htmlfile(HttpTransport):
    def prelude(self, callback: str) -> str:
        return _htmlfile_prelude(callback)

    def wrap(self, frame: str, callback: str) -> str:
        return f"<script>\np({script_quote(frame)});\n</script>\r\n"


class _Jsonp(HttpTransport):
    def wrap(self, frame: str, callback: str) -> str:
        return f"{callback}({script_quote(frame)});\r\n"


_JAVASCRIPT = "application/javascript; charset=UTF-8"
RECEIVERS: dict[str, HttpTransport] = {
    "xhr": HttpTransport(_JAVASCRIPT, streaming=False),
    "xhr_streaming": _XhrStreaming(_JAVASCRIPT, streaming=True),
    "eventsource": _EventSource("text/event-stream; charset=UTF-8", streaming=True),
    # The page only runs its own inline scripts, which call its parent: it loads, sends and frames nothing.
    "htmlfile": _Htmlfile(
        "text/html; charset=UTF-8",
        streaming=True,
        needs_callback=True,
        policy="default-src 'none'; script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'",
    ),
    "jsonp": _Jsonp(_JAVASCRIPT, streaming=False, needs_callback=True),
}
