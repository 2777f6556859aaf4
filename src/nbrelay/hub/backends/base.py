"""What the hub needs from a backend: positioned, bounded history per stream, and fan-out of new events.

A backend assigns each published event the next offset of its stream and the stream's epoch, keeps the last
`history_size` events (and none older than `history_ttl_s`), and calls `deliver` for every event of the streams
this node watches, in offset order per stream. The hub calls `watch` when a stream gets its first local
subscriber and `unwatch` when its last one goes, so a shared broker sends a stream's events only to the nodes
that have someone to give them to. Backends are picked by URL in `hub.open_hub`; every one of them passes the
same contract tests (tests/hub/test_hub.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from nbrelay.models import Event

Deliver = Callable[[Event], None]


async def stop(tasks: Collection[asyncio.Task[None]]) -> None:
    """Cancel `tasks` and wait until they have ended. Cancelled again and again: Python 3.11's wait_for (which
    redis-py calls around every write) swallows a cancellation that arrives as its inner await finishes."""
    while pending := [task for task in tasks if not task.done()]:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=0.1)


@dataclass(frozen=True, slots=True)
class History:
    epoch: str
    last_offset: int  # 0 when nothing was published yet
    # The oldest offset still kept; last_offset + 1 when none is kept. A backend that reads only what follows
    # `after` may answer the oldest kept offset above `after` instead: the resume decision is the same.
    first_offset: int
    events: list[Event]  # those with offset > the `after` asked for, oldest first


class HubBackend(Protocol):
    async def start(self, deliver: Deliver) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Return once what keeps the history answers (the database, Redis); raise HubUnavailable when not."""

    async def publish(self, event: Event, streams: Sequence[str]) -> list[Event]:
        """Append `event` to each stream's history (atomically where the backend can), have it delivered to the
        watchers of those streams, and return the positioned copies, one per stream, in the order given."""

    async def watch(self, stream: str) -> None:
        """Start delivering the stream's live events to this node; return once they really arrive (every event
        published after this returns is delivered)."""

    async def unwatch(self, stream: str) -> None:
        """Stop delivering the stream's events to this node (nobody here follows it any more)."""

    async def position(self, stream: str) -> tuple[str, int]:
        """(epoch, last offset) of the stream; may be served from a cache (it is only advisory)."""

    async def history(self, stream: str, after: int) -> History: ...
