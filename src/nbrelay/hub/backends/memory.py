"""The in-process hub backend: history in bounded deques, a new epoch per process, fan-out within the process."""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from nbrelay.hub.backends.base import Deliver, History
from nbrelay.models import Event


@dataclass
class _Stream:
    epoch: str
    offset: int = 0
    kept: deque[tuple[float, Event]] = field(default_factory=deque)
    touched: float = field(default_factory=time.monotonic)


class MemoryBackend:
    def __init__(self, *, history_size: int = 1000, history_ttl_s: float = 3600.0):
        self.history_size = history_size
        self.history_ttl_s = history_ttl_s
        self._streams: dict[str, _Stream] = {}
        self._deliver: Deliver | None = None
        self._last_sweep = time.monotonic()

    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver

    async def close(self) -> None:
        self._streams.clear()

    async def ping(self) -> None:
        """The history is this process's own memory: nothing to ask."""

    async def watch(self, stream: str) -> None:
        """Nothing to do: every event published in this process is delivered in it."""

    async def unwatch(self, stream: str) -> None:
        """Nothing to do (see watch)."""

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            # A stream forgotten after its TTL comes back with a new epoch, so nobody resumes into a gap.
            stream = self._streams[name] = _Stream(epoch=secrets.token_hex(4))
        return stream

    def _expire(self, stream: _Stream, now: float) -> None:
        cutoff = now - self.history_ttl_s
        while stream.kept and stream.kept[0][0] < cutoff:
            stream.kept.popleft()

    def _sweep(self, now: float) -> None:
        """Forget streams idle for longer than the TTL: memory stays bounded by what happened recently."""
        if now - self._last_sweep < min(60.0, self.history_ttl_s):
            return
        self._last_sweep = now
        for name in [n for n, s in self._streams.items() if now - s.touched > self.history_ttl_s]:
            del self._streams[name]

    async def publish(self, event: Event, streams: Sequence[str]) -> list[Event]:
        now = time.monotonic()
        self._sweep(now)
        published = []
        for stream in streams:
            state = self._stream(stream)
            state.offset += 1
            state.touched = now
            positioned = event.positioned(stream, state.offset, state.epoch)
            state.kept.append((now, positioned))
            if len(state.kept) > self.history_size:
                state.kept.popleft()
            published.append(positioned)
            if self._deliver is not None:
                self._deliver(positioned)
        return published

    async def position(self, stream: str) -> tuple[str, int]:
        state = self._stream(stream)
        return state.epoch, state.offset

    async def history(self, stream: str, after: int) -> History:
        state = self._stream(stream)
        self._expire(state, time.monotonic())
        first = state.kept[0][1].offset if state.kept else state.offset + 1
        assert first is not None
        events = [event for _, event in state.kept if (event.offset or 0) > after]
        return History(epoch=state.epoch, last_offset=state.offset, first_offset=first, events=events)
