"""The hub: publish to named streams, subscribe with bounded queues, resume from an (epoch, offset).

Queue policy (every queue is bounded): progress events of a job are coalesced once a subscriber's queue is
half full (the newest replaces the pending one); nothing else is ever dropped. A subscriber whose queue is
full is marked overflowed and its transport closes it (4008); the client resumes from history, losing nothing.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from nbrelay.hub.backends.base import HubBackend
from nbrelay.models import Event

STREAM_NAME = re.compile(r"^(broadcast|user:[A-Za-z0-9_.@+-]{1,128}|job:[0-9]{1,18})$")
COALESCIBLE = frozenset({"job.progress"})


def parse_position(value: str | None) -> tuple[str, int] | None:
    """ "k3f9:42" → ("k3f9", 42); None for anything else."""
    if not value:
        return None
    epoch, sep, offset = value.rpartition(":")
    if not sep or not epoch or not offset.isdigit():
        return None
    return epoch, int(offset)


class Subscriber(Protocol):
    """What the hub hands events to: a Subscription, or a transport that writes them itself."""

    streams: set[str]

    def offer(self, event: Event) -> None: ...


class Subscription:
    """One subscriber's bounded queue of events, across the streams it follows."""

    def __init__(self, max_queue: int = 1000):
        self.max_queue = max_queue
        self.queue: deque[Event] = deque()
        self.wakeup = asyncio.Event()
        self.overflowed = False
        self.streams: set[str] = set()
        self.coalesced = 0
        # Called once when the queue overflows: the transport may be stuck in a send to a peer that stopped
        # reading, and must be interrupted to close the connection.
        self.on_overflow: Callable[[], None] | None = None

    def offer(self, event: Event) -> None:
        if self.overflowed:
            return
        if event.type in COALESCIBLE and len(self.queue) >= self.max_queue // 2 and self._coalesce(event):
            return
        if len(self.queue) >= self.max_queue:
            self.overflowed = True
            self.queue.clear()  # nothing more will be sent on this connection: free the memory now
            if self.on_overflow is not None:
                self.on_overflow()
        else:
            self.queue.append(event)
        self.wakeup.set()

    def _coalesce(self, event: Event) -> bool:
        """Drop the pending progress event of the same job and stream; the new one goes last (offsets rise)."""
        job = event.data.get("job")
        for i in range(len(self.queue) - 1, -1, -1):
            pending = self.queue[i]
            if pending.type == event.type and pending.stream == event.stream and pending.data.get("job") == job:
                del self.queue[i]
                self.queue.append(event)
                self.coalesced += 1
                self.wakeup.set()
                return True
        return False

    async def next_batch(self) -> list[Event]:
        """Wait for events and take all that are pending (empty when overflowed)."""
        while not self.queue and not self.overflowed:
            self.wakeup.clear()
            await self.wakeup.wait()
        batch = list(self.queue)
        self.queue.clear()
        return batch


@dataclass(frozen=True, slots=True)
class Resume:
    """The answer to a subscribe with `since`: the missed events, or recovered=False when they are gone."""

    recovered: bool
    events: list[Event]
    epoch: str
    last_offset: int


class Hub:
    def __init__(self, backend: HubBackend, *, subscriber_queue_size: int = 1000):
        self.backend = backend
        self.subscriber_queue_size = subscriber_queue_size
        self._subscribers: dict[str, set[Subscriber]] = {}
        self.published = 0

    async def start(self) -> None:
        await self.backend.start(self._deliver)

    async def close(self) -> None:
        await self.backend.close()

    def _deliver(self, event: Event) -> None:
        assert event.stream is not None
        for subscription in self._subscribers.get(event.stream, ()):
            subscription.offer(event)

    async def publish(self, stream: str, kind: str, data: dict[str, Any]) -> Event:
        self.published += 1
        return await self.backend.publish(stream, kind, data)

    async def publish_many(self, streams: list[str], kind: str, data: dict[str, Any]) -> list[Event]:
        """One event on several streams (a job's owner stream and its own), atomically where the backend can."""
        self.published += len(streams)
        return await self.backend.publish_many(streams, kind, data)

    def subscription(self) -> Subscription:
        return Subscription(self.subscriber_queue_size)

    def subscribe(self, subscription: Subscriber, stream: str) -> None:
        self._subscribers.setdefault(stream, set()).add(subscription)
        subscription.streams.add(stream)

    def unsubscribe(self, subscription: Subscriber, streams: Iterable[str] | None = None) -> None:
        for stream in list(streams if streams is not None else subscription.streams):
            followers = self._subscribers.get(stream)
            if followers is not None:
                followers.discard(subscription)
                if not followers:
                    del self._subscribers[stream]
            subscription.streams.discard(stream)

    async def position(self, stream: str) -> str:
        epoch, offset = await self.backend.position(stream)
        return f"{epoch}:{offset}"

    async def resume(self, stream: str, since: str) -> Resume:
        """Events after `since` ("epoch:offset"), or recovered=False if the epoch changed or they aged out."""
        position = parse_position(since)
        after = position[1] if position else 0
        history = await self.backend.history(stream, after=after)
        if position is None or position[0] != history.epoch or after > history.last_offset:
            return Resume(False, [], history.epoch, history.last_offset)
        if after + 1 < history.first_offset:
            return Resume(False, [], history.epoch, history.last_offset)
        return Resume(True, history.events, history.epoch, history.last_offset)

    def subscriber_count(self) -> int:
        return len({s for followers in self._subscribers.values() for s in followers})


def open_hub(
    url: str,
    *,
    history_size: int,
    history_ttl_s: float,
    subscriber_queue_size: int,
    engine: AsyncEngine | None = None,
) -> Hub:
    """The hub for a broker URL: sql:// (history in the job database, `engine`) or memory:// (this process only;
    history is lost on restart, and clients resuming then get recovered=false)."""
    scheme = url.split("://", 1)[0]
    backend: HubBackend
    if scheme == "memory":
        from nbrelay.hub.backends.memory import MemoryBackend

        backend = MemoryBackend(history_size=history_size, history_ttl_s=history_ttl_s)
    elif scheme == "sql":
        from nbrelay.hub.backends.sql import SqlBackend

        if engine is None:
            raise ValueError("the sql:// hub keeps its history in the job database: pass its engine")
        backend = SqlBackend(engine, history_size=history_size, history_ttl_s=history_ttl_s)
    else:
        raise ValueError(f"unsupported broker URL {url!r}: use sql:// (default) or memory://")
    return Hub(backend, subscriber_queue_size=subscriber_queue_size)
