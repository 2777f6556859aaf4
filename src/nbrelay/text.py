"""Text that can be written as UTF-8. JSON lets a string hold a lone UTF-16 surrogate (`"\\ud800"`, an escape
without its pair); Python reads it into a `str` that no UTF-8 writer can encode: not an answer, a database row, a
kernel message or a report. Such text is refused where it comes in (request bodies, notebooks), with the place
it was found, so that nothing is stored that could not be shown again.
"""

from __future__ import annotations

import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")
# In JSON text, a surrogate can come only from an escape or, read with Python's json (which decodes bytes with
# "surrogatepass"), from one encoded as UTF-8 bytes (ED A0..BF xx).
_MAY_HOLD_TEXT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]")
_MAY_HOLD_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def may_hold_surrogate(raw: str | bytes | bytearray) -> bool:
    """Whether JSON text may decode to a lone surrogate (a search in C; the decoded value decides: a pair of
    escapes decodes to one character)."""
    if isinstance(raw, (bytes, bytearray)):
        return _MAY_HOLD_BYTES.search(raw) is not None
    return _MAY_HOLD_TEXT.search(raw) is not None


def lone_surrogate(value: Any) -> str | None:
    """Where the first string of a JSON value (keys too) holds a lone surrogate, and which, as people read it
    (`parameters.name holds '\\ud800'`); None when every string is whole. Iterative: JSON may nest as deep as its
    parser goes."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            found = _SURROGATE.search(item)
            if found is not None:
                return f"{where or 'the text'} holds {found.group()!r}"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if isinstance(key, str) and (in_key := _SURROGATE.search(key)) is not None:
                    return f"a key of {where or 'the top level'} holds {in_key.group()!r}"
                stack.append((f"{where}.{key}" if where else str(key), child))
        elif isinstance(item, list):
            stack.extend((f"{where}[{i}]", child) for i, child in reversed(list(enumerate(item))))
    return None


def refusal(found: str) -> str:
    """The message for what lone_surrogate found."""
    return (
        f"{found}, a lone UTF-16 surrogate: no character, so it cannot be stored or shown as text (a character "
        "beyond U+FFFF is sent as UTF-8, or as a pair of escapes such as \\ud83d\\ude00)"
    )
