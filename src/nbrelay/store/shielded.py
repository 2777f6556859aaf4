"""Database calls that a cancellation does not cut short.

A request is cancelled when its client goes away (Starlette cancels a streaming response's task group, and anyio
cancels again at every await while the scope is cancelled). A cancellation that lands inside an SQLAlchemy call
invalidates its connection, and the graceful close SQLAlchemy then starts is cancelled in turn and left pending:
"Task was destroyed but it is pending!" in the log, and a connection thrown away instead of returned to the pool.
So a store call runs to its end in a task of its own; its caller is cancelled all the same, at once.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)

_finishing: set[asyncio.Task[Any]] = set()  # calls whose callers were cancelled, held until they end


def finishes_when_cancelled(method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        task = asyncio.ensure_future(method(*args, **kwargs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                _finishing.add(task)
                task.add_done_callback(_ended_after_cancel)
            raise

    return call


async def settle(timeout_s: float = 10.0) -> None:
    """Wait for the calls whose callers were cancelled (at most `timeout_s`): a store closes its engine only after
    them, so that a write asked for before a shutdown is made, and no call is left mid-way when the loop ends."""
    pending = [task for task in _finishing if task.get_loop() is asyncio.get_running_loop()]
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)


def _ended_after_cancel(task: asyncio.Task[Any]) -> None:
    _finishing.discard(task)
    if not task.cancelled() and task.exception() is not None:  # nobody waits for it: say it here
        log.warning("a database call whose caller had gone away failed: %r", task.exception())


def calls_finish_when_cancelled(cls: C) -> C:
    """finishes_when_cancelled on each public coroutine method of the class."""
    for name, member in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(member):
            setattr(cls, name, finishes_when_cancelled(member))
    return cls
