"""A worker's memory of pure rendering answers, across its jobs: a notebook run again (a schedule, a batch of
parameter sets) has the same inputs, highlighted and cleaned once for all its runs.

Only what depends on its key alone is kept: the exporter a worker renders with is the same for all its jobs.
Bounded by entries and by characters; thread-safe (each job renders on a thread of its own).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 4096
MAX_CHARS = 16 * 1024 * 1024  # of kept answers, all entries together (a str's length, ~1 byte a character)
MAX_ANSWER_CHARS = 256 * 1024  # a larger answer is computed again when asked again, never kept


class RenderCache(Generic[T]):
    """Least recently used answers of `compute`, by key. `size(answer)` is its length in characters."""

    def __init__(
        self,
        size: Callable[[T], int],
        *,
        max_entries: int = MAX_ENTRIES,
        max_chars: int = MAX_CHARS,
        max_answer_chars: int = MAX_ANSWER_CHARS,
    ) -> None:
        self._size = size
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.max_answer_chars = max_answer_chars
        self._answers: OrderedDict[Hashable, tuple[T, int]] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T]) -> T:
        with self._lock:
            kept = self._answers.get(key)
            if kept is not None:
                self._answers.move_to_end(key)
                self.hits += 1
                return kept[0]
            self.misses += 1
        answer = compute()  # outside the lock: two threads may compute the same answer once each, never wrongly
        chars = self._size(answer)
        if chars <= self.max_answer_chars:
            with self._lock:
                if key not in self._answers:
                    self._answers[key] = (answer, chars)
                    self._chars += chars
                    while len(self._answers) > self.max_entries or self._chars > self.max_chars:
                        _, (_, dropped) = self._answers.popitem(last=False)
                        self._chars -= dropped
        return answer

    def __len__(self) -> int:
        return len(self._answers)

    @property
    def chars(self) -> int:
        return self._chars
