"""Executors run jobs somewhere else than the web event loop: `local` uses worker processes on this machine."""

from nbrelay.executor.base import Executor, OnEvent

__all__ = ["Executor", "OnEvent"]
