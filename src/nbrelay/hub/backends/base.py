"""What the hub needs from a backend: positioned, bounded history per stream, and fan-out of new events.

A backend assigns each published event the next offset of its stream and the stream's epoch, keeps the last
`history_size` events (and none older than `history_ttl_s`), and calls `deliver` for every event published on
any node sharing the backend. A Redis Streams backend fits: XADD with MAXLEN for history, an INCR counter for
offsets, an epoch key that vanishes with the data, and XREAD or pub/sub for fan-out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from nbrelay.models import Event

Deliver = Callable[[Event], None]


@dataclass(frozen=True, slots=True)
class History:
    epoch: str
    last_offset: int  # 0 when nothing was published yet
    first_offset: int  # the oldest offset still kept; last_offset + 1 when none is kept
    events: list[Event]  # those with offset > the `after` asked for, oldest first


class HubBackend(Protocol):
    async def start(self, deliver: Deliver) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, stream: str, kind: str, data: dict[str, Any]) -> Event:
        """Append to the stream's history, deliver to subscribers, return the positioned event."""

    async def publish_many(self, streams: list[str], kind: str, data: dict[str, Any]) -> list[Event]:
        """The same event on several streams."""

    async def position(self, stream: str) -> tuple[str, int]:
        """(epoch, last offset) of the stream; may be served from a cache (it is only advisory)."""

    async def history(self, stream: str, after: int) -> History: ...
