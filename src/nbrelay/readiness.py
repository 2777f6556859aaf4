"""Readiness: whether this node can take work now, as a load balancer or an orchestrator asks (`GET /api/ready`).

`/api/health` says the process answers; readiness asks what it depends on — the job database, the hub's backend
(the database or Redis) and the executor (its worker processes, or Celery's broker) — each at once and each within
a time limit, so one that hangs is said as such instead of holding the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from nbrelay.errors import reason_of

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0
RETRY_AFTER_S = 5

Probe = Callable[[], Awaitable[None]]


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


async def _check(name: str, probe: Probe, timeout_s: float) -> Check:
    started = time.perf_counter()
    reason: str | None = None
    try:
        await asyncio.wait_for(probe(), timeout_s)
    except TimeoutError:
        reason = f"no answer within {timeout_s:g} s"
    except Exception as exc:
        reason = reason_of(exc)
    return Check(name, reason is None, round((time.perf_counter() - started) * 1000, 1), reason)


class Readiness:
    """Runs the probes together; logs a change of the answer once (a probe every few seconds must not fill the log
    while something is away)."""

    def __init__(self, probes: Mapping[str, Probe], *, timeout_s: float = CHECK_TIMEOUT_S):
        self.probes = dict(probes)
        self.timeout_s = timeout_s
        self._failing: frozenset[str] = frozenset()

    async def check(self) -> list[Check]:
        checks = list(await asyncio.gather(*(_check(n, p, self.timeout_s) for n, p in self.probes.items())))
        failing = frozenset(c.name for c in checks if not c.ok)
        if failing != self._failing:
            if failing:
                why = "; ".join(f"{c.name}: {c.reason}" for c in checks if not c.ok)
                log.warning("not ready: %s", why)
            else:
                log.info("ready again (%s answer)", ", ".join(self.probes))
            self._failing = failing
        return checks
