"""Readiness: whether this node can take work now, as a load balancer or an orchestrator asks (`GET /api/ready`).

`/api/health` says the process answers; readiness asks what it depends on — the job database, the hub's backend
(the database or Redis) and the executor (its worker processes, or Celery's broker) — each at once and each within
a time limit, so one that hangs is said as such instead of holding the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from nbrelay.errors import reason_of

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
RETRY_AFTER_S = 5

Probe = Callable[[], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    ms: float  # how long it took to answer (or to fail)
    reason: str | None = None  # why not, when not ok

    def shown(self, *, why: bool) -> dict[str, object]:
        shape: dict[str, object] = {"ok": self.ok, "ms": self.ms}
        if why and self.reason is not None:
            shape["reason"] = self.reason
        return shape


class Readiness:
    """Runs the probes together; logs a change of the answer once (a probe every few seconds must not fill the log
    while something is away)."""

    def __init__(self, probes: Mapping[str, Probe], *, timeout_s: float = CHECK_TIMEOUT_S):
        self.probes = dict(probes)
        self.timeout_s = timeout_s
        self._failing: frozenset[str] = frozenset()
        # A probe still under way when the next check comes is joined, not started again: one that hangs (a broker
        # that never answers the connect) holds one task or thread, however often a load balancer asks.
        self._under_way: dict[str, asyncio.Future[None]] = {}

    def _probe(self, name: str) -> asyncio.Future[None]:
        under_way = self._under_way.get(name)
        if under_way is None or under_way.done():
            under_way = self._under_way[name] = asyncio.ensure_future(self.probes[name]())
            under_way.add_done_callback(lambda done: done.cancelled() or done.exception())  # retrieved: no warning
        return under_way

    async def _check(self, name: str) -> Check:
        started = time.perf_counter()
        reason: str | None = None
        try:
            await asyncio.wait_for(asyncio.shield(self._probe(name)), self.timeout_s)
        except TimeoutError:
            reason = f"no answer within {self.timeout_s:g} s"
        except Exception as exc:
            reason = reason_of(exc)
        return Check(name, reason is None, round((time.perf_counter() - started) * 1000, 1), reason)

    def close(self) -> None:
        """The node stops: probes under way are given up (a thread of one ends by its own time limit)."""
        for under_way in self._under_way.values():
            under_way.cancel()

    async def check(self) -> list[Check]:
        checks = list(await asyncio.gather(*(self._check(name) for name in self.probes)))
        failing = frozenset(c.name for c in checks if not c.ok)
        if failing != self._failing:
            if failing:
                why = "; ".join(f"{c.name}: {c.reason}" for c in checks if not c.ok)
                log.warning("not ready: %s", why)
            else:
                log.info("ready again (%s answer)", ", ".join(self.probes))
            self._failing = failing
        return checks
