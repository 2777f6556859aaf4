"""What a kernel process is held to from its start: it must not outlive its worker (the parent-death signal of
Linux, a no-op elsewhere), and it may hold only so much memory (RLIMIT_DATA).

Kept free of imports beyond the standard library: the kernel zygote uses it before it preloads anything.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return None


def die_with_parent(expected_parent: int | None = None) -> None:
    """Be killed (SIGKILL) when the parent process dies. With `expected_parent`, exit at once if the parent is
    already another one: it died before the signal was set, and this process was re-parented."""
    prctl = _prctl()
    if prctl is None:
        return
    with contextlib.suppress(OSError):
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(0)


def limit_memory(max_bytes: int) -> None:
    """Cap this process's data segment (heap and private mappings: what a kernel's objects take) at `max_bytes`,
    so a runaway cell gets MemoryError instead of taking the machine; 0 leaves it unlimited. RLIMIT_DATA, not
    RLIMIT_AS: a kernel reserves ~5x more address space than it uses (thread stacks, libraries)."""
    if max_bytes > 0:
        resource.setrlimit(resource.RLIMIT_DATA, (max_bytes, max_bytes))


def start_kernel(parent: int, memory_max_bytes: int) -> None:
    """In a new kernel process, before the kernel runs: die with `parent`, keep within the memory limit."""
    die_with_parent(parent)
    limit_memory(memory_max_bytes)


def child_is_kernel(memory_max_bytes: int) -> Callable[[], None]:
    """A `preexec_fn` for subprocess: the child dies with this process (even if this one died before the child
    set it up) and keeps within the memory limit. Resolved here in the parent, so the child calls no loader
    between fork and exec."""
    _prctl()
    return functools.partial(start_kernel, os.getpid(), memory_max_bytes)
