"""The hub: publish to named streams, subscribe with bounded queues, resume from an (epoch, offset).

Queue policy (every queue is bounded): progress events of a job are coalesced once a subscriber's queue is
half full (the newest replaces the pending one); nothing else is ever dropped. A subscriber whose queue is
full is marked overflowed and its transport closes it (4008); the client resumes from history, losing nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nbrelay.errors import HubUnavailable
from nbrelay.hub.backends.base import HubBackend, stop
from nbrelay.models import Event, utcnow

log = logging.getLogger(__name__)
# One name per stream: \Z, not $ (which lets a final "\n" through), and no leading zeros (found from outside:
# "user:alice\n" and "job:0001" were streams of their own, which nothing is ever published on).
STREAM_NAME = re.compile(r"^(broadcast|user:[A-Za-z0-9_.@+-]{1,128}|job:(0|[1-9][0-9]{0,17}))\Z")
COALESCIBLE = frozenset({"job.progress"})


MAX_OFFSET = 2**63 - 1  # what every backend stores (a signed 64-bit integer); a position past it is nobody's


def parse_position(value: str | None) -> tuple[str, int] | None:
    """ "k3f9:42" → ("k3f9", 42); None for anything else (an offset in other digits than 0-9, or past MAX_OFFSET)."""
    if not value:
        return None
    epoch, sep, offset = value.rpartition(":")
    if not sep or not epoch or not (offset.isascii() and offset.isdigit()) or len(offset) > len(str(MAX_OFFSET)):
        return None
    number = int(offset)
    return (epoch, number) if number <= MAX_OFFSET else None


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
        self.interrupted = False

    def interrupt(self) -> None:
        """Make next_batch return now, with what it has (maybe nothing): the transport has to act, e.g. close."""
        self.interrupted = True
        self.wakeup.set()

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
        """Wait for events and take all that are pending (empty when overflowed or interrupted)."""
        while not self.queue and not self.overflowed and not self.interrupted:
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
    """Streams, resume and the local subscribers; the backend keeps history and brings in the live events."""

    def __init__(self, backend: HubBackend, *, subscriber_queue_size: int = 1000, watch_timeout_s: float = 10.0):
        self.backend = backend
        self.subscriber_queue_size = subscriber_queue_size
        self.watch_timeout_s = watch_timeout_s
        self._subscribers: dict[str, set[Subscriber]] = {}
        # One watch per stream with local subscribers: the backend's answer to "send me this stream's events",
        # awaited by follow(). Unwatches run as tasks too, in order behind the watches (see _spawn).
        self._watches: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.published = 0
        # Told how long each delivered event took from its publisher's clock to this node (metrics: hub lag;
        # near 0 for events published here, the fan-out's delay for those from other nodes).
        self.observe_lag: Callable[[float], None] | None = None

    async def start(self) -> None:
        await self.backend.start(self._deliver)

    async def close(self) -> None:
        await stop(list(self._tasks))
        await self.backend.close()

    async def ping(self) -> None:
        await self.backend.ping()

    def _deliver(self, event: Event) -> None:
        assert event.stream is not None
        if self.observe_lag is not None:
            self.observe_lag((utcnow() - event.ts).total_seconds())
        for subscription in self._subscribers.get(event.stream, ()):
            subscription.offer(event)

    async def publish(self, event: Event, streams: Sequence[str]) -> list[Event]:
        """`event` on each of `streams` (a job's owner stream and its own: atomically where the backend can);
        the positioned copies, one per stream."""
        self.published += len(streams)
        return await self.backend.publish(event, streams)

    def subscription(self) -> Subscription:
        return Subscription(self.subscriber_queue_size)

    def subscribe(self, subscription: Subscriber, stream: str) -> None:
        """Start handing the stream's events to `subscription`. Events reach it once the backend watches the
        stream, which may take a round trip to the broker: callers that must not miss one use follow()."""
        followers = self._subscribers.get(stream)
        if followers is None:
            followers = self._subscribers[stream] = set()
            self._watches[stream] = self._spawn(self.backend.watch(stream))
        followers.add(subscription)
        subscription.streams.add(stream)

    async def follow(self, subscription: Subscriber, stream: str) -> None:
        """subscribe(), then wait until the backend really receives the stream's live events: nothing published
        after this returns is missed. HubUnavailable when the broker does not confirm in time."""
        self.subscribe(subscription, stream)
        watch = self._watches[stream]
        if not watch.done():
            await asyncio.wait({watch}, timeout=self.watch_timeout_s)  # never cancels the watch itself
        failed = watch.exception() if watch.done() and not watch.cancelled() else None
        if not watch.done() or failed is not None:
            raise HubUnavailable(
                f"the hub could not start following {stream} within {self.watch_timeout_s:g} s: its broker "
                "did not answer",
                hint="try again shortly; the server's log says why the broker is unreachable",
            ) from failed

    def unsubscribe(self, subscription: Subscriber, streams: Iterable[str] | None = None) -> None:
        for stream in list(streams if streams is not None else subscription.streams):
            followers = self._subscribers.get(stream)
            if followers is not None:
                followers.discard(subscription)
                if not followers:
                    del self._subscribers[stream]
                    # A watch still under way is left to finish (the unwatch behind it releases it): cut off in
                    # the middle of talking to the broker, it could leave the backend's bookkeeping half done.
                    del self._watches[stream]
                    self._spawn(self.backend.unwatch(stream))
            subscription.streams.discard(stream)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a watch or unwatch. Tasks start in the order they are made, so a stream's watch and unwatch
        reach the backend in the order the subscribers came and went (backends keep that order)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub backend: watch or unwatch failed", exc_info=task.exception())

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


BROKER_SCHEMES = (
    "sql:// (history in the job database), memory:// (this process only) or redis://host:port/db (several nodes)"
)


def open_hub(
    url: str,
    *,
    database_url: str | None = None,
    history_size: int,
    history_ttl_s: float,
    subscriber_queue_size: int,
) -> Hub:
    """The hub for a broker URL: sql:// keeps history in the job database at `database_url` (fan-out within
    this process); memory:// keeps it in this process (lost on restart: clients resuming then get
    recovered=false); redis://host:port/db[?prefix=name] shares history and fan-out between nodes."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    backend: HubBackend
    if scheme == "memory":
        from nbrelay.hub.backends.memory import MemoryBackend

        backend = MemoryBackend(history_size=history_size, history_ttl_s=history_ttl_s)
    elif scheme == "sql":
        from nbrelay.hub.backends.sql import SqlBackend

        if not database_url:
            raise ValueError("the sql:// hub keeps its history in the job database: pass its database_url")
        backend = SqlBackend(database_url, history_size=history_size, history_ttl_s=history_ttl_s)
    elif scheme in ("redis", "rediss"):
        from nbrelay.hub.backends.redis import RedisBackend

        backend = RedisBackend(url, history_size=history_size, history_ttl_s=history_ttl_s)
    else:
        raise ValueError(f"unsupported broker URL {url!r} (NBRELAY_BROKER_URL): use {BROKER_SCHEMES}")
    return Hub(backend, subscriber_queue_size=subscriber_queue_size)
