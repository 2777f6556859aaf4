"""Executors run queued jobs somewhere else than the web event loop; `open_executor` is the one place that picks
one (NBRELAY_EXECUTOR): `local` (worker processes of this server) or `celery` (workers on other machines)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from nbrelay.executor.base import Executor

if TYPE_CHECKING:  # a worker process imports this package too, and needs neither the store nor SQLAlchemy
    from nbrelay.config import Settings
    from nbrelay.recorder import JobRecorder
    from nbrelay.store.base import JobStore

__all__ = ["EXECUTORS", "Executor", "open_executor"]

EXECUTORS = ("local", "celery")


def open_executor(settings: Settings, store: JobStore, recorder: JobRecorder) -> Executor:
    """The executor `settings.executor` names; its modules (and Celery) are imported only when chosen."""
    if settings.executor == "local":
        from nbrelay.executor.local import LocalExecutor

        return LocalExecutor(settings, store, recorder)
    if settings.executor == "celery":
        from nbrelay.executor.celery import CeleryExecutor

        return CeleryExecutor(settings, store, recorder)
    raise ValueError(f"unknown executor {settings.executor!r}: use one of {', '.join(EXECUTORS)}")
