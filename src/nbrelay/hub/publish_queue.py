"""Job events to the hub in the order they came, none given up while the hub's broker is away.

A job's state is in the store before its event is published; the event is how live clients learn of it. A publish
that failed was lost for good (found from outside: Redis stalled for 30 s, and the clients of a job that ended then
never heard of its end; the offsets stayed contiguous, so nothing told them). Events now wait here and go out in
order once the broker answers again, and whoever records them goes on meanwhile: a stall no longer holds up the
next job's end in the store, publish by publish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence

from nbrelay.errors import HubUnavailable
from nbrelay.hub.hub import Hub
from nbrelay.models import TERMINAL_EVENTS, Event

log = logging.getLogger(__name__)
_RETRY_FIRST_S = 0.2
_RETRY_MAX_S = 5.0
_WAIT_S = 2.0  # how long a publish waits for its event while the broker answers (its own timeout, about)
QUEUE_LIMIT = 100_000  # events held while the broker is away; past it the oldest that is no job's end goes


class PublishQueue:
    def __init__(self, hub: Hub, limit: int = QUEUE_LIMIT):
        self.hub = hub
        self.limit = limit
        self.dropped = 0
        self._queue: deque[tuple[Event, Sequence[str], asyncio.Future[None]]] = deque()
        self.failing = False  # the broker did not take the last try
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="hub-publish")

    def put(self, event: Event, streams: Sequence[str]) -> asyncio.Future[None]:
        """Queue `event`; the future is done once it is published (or given up)."""
        if len(self._queue) >= self.limit:
            self._drop_one()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((event, streams, done))
        self._idle.clear()
        self._wake.set()
        return done

    async def publish(self, event: Event, streams: Sequence[str]) -> None:
        """Queue `event` and, while the broker answers, wait until it is published, as a publish of its own did
        (so what the caller does next comes after it); while it is away, return at once."""
        done = self.put(event, streams)
        if not self.failing:
            await asyncio.wait({done}, timeout=_WAIT_S)

    async def close(self, wait_s: float = 5.0) -> None:
        """Publish what is left (for at most `wait_s`: the broker may be away), then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), wait_s)
        if self._queue:
            log.warning("%d job event(s) not published: the hub's broker did not take them", len(self._queue))
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def _drop_one(self) -> None:
        """Make room: the oldest event that is no job's end (an output, a progress), else the oldest."""
        victim = next((i for i, item in enumerate(self._queue) if item[0].type not in TERMINAL_EVENTS), 0)
        _event, _streams, done = self._queue[victim]
        del self._queue[victim]
        if not done.done():
            done.set_result(None)
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("the hub's broker is away and %d job events wait: %d dropped", self.limit, self.dropped)

    async def _drain(self) -> None:
        delay = _RETRY_FIRST_S
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            event, streams, done = self._queue[0]
            try:
                await self.hub.publish(event, streams)
            except HubUnavailable as exc:
                if not self.failing:
                    log.warning("job events wait for the hub's broker: %s", exc)
                self.failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            except Exception:  # a bug must not hold every later event back
                log.exception("publishing %s failed; it is dropped", event.type)
            if self.failing:
                log.warning("the hub's broker is back: %d job event(s) still to publish", len(self._queue) - 1)
            self.failing, delay = False, _RETRY_FIRST_S
            if self._queue and self._queue[0][0] is event:
                self._queue.popleft()
            if not done.done():
                done.set_result(None)
