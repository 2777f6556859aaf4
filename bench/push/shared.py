"""Pieces shared by the two benchmark servers (nbrelay and the python-socketio baseline) and the load client.

Everything here is benchmark-only: nothing is imported by the product.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import resource
import time
from collections.abc import Awaitable, Callable
from typing import Any

HEARTBEAT_S = 25.0  # nbrelay's default heartbeat_s, and Engine.IO's default ping_interval
MAX_PUBLISH_S = 120.0  # no paced publish may run longer than this


def raise_fd_limit(needed: int) -> tuple[int, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; (soft, hard) after. The caller checks against `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        # root may raise the hard limit too (CAP_SYS_RESOURCE); try, and keep what we have when refused
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def vm_rss_kib() -> int:
    """The current resident set size of this process (VmRSS), KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def rusage(connections: int) -> dict[str, Any]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "rss_kib": vm_rss_kib(),
        "connections": connections,
        "gc_collections": [generation["collections"] for generation in gc.get_stats()],
        "gc_objects": len(gc.get_objects()) if os.environ.get("BENCH_GC_COUNT") else None,
        "time": time.time(),
    }


def payload(size: int, seq: int, due: float) -> dict[str, Any]:
    """The event body both servers send. `t` is the wall time publishing started (the clients subtract it from
    their receive time); `due` is when the paced schedule wanted it published: when the publisher falls behind,
    now - due is the open-loop latency a producer that does not wait would see."""
    return {"text": "x" * size, "seq": seq, "t": time.time(), "due": due}


async def paced(count: int, rate: float, publish_one: Callable[[int, float], Awaitable[None]]) -> dict[str, Any]:
    """Call publish_one(i, due) for i in 0..count-1 at `rate` per second on an absolute schedule (0: at once)."""
    count = max(0, min(int(count), 1_000_000))
    start = time.monotonic()
    start_wall = time.time()
    deadline = start + MAX_PUBLISH_S
    late = 0
    max_late = 0.0
    done = 0
    for i in range(count):
        if rate > 0:
            due = start + i / rate
            now = time.monotonic()
            if now < due:
                await asyncio.sleep(due - now)
            else:
                max_late = max(max_late, now - due)
                if now - due > 0.01:
                    late += 1
            await publish_one(i, start_wall + i / rate)
        else:
            await publish_one(i, time.time())
        done += 1
        if time.monotonic() > deadline:
            break
    return {"published": done, "elapsed_s": time.monotonic() - start, "late": late, "max_late_s": max_late}


def uvicorn_options(port: int, heartbeat_s: float) -> dict[str, Any]:
    """The uvicorn options of `nbrelay serve` (src/nbrelay/cli.py), used by both servers."""
    return {
        "host": "127.0.0.1",
        "port": port,
        "ws": "websockets-sansio",
        "ws_per_message_deflate": False,
        "ws_ping_interval": heartbeat_s,
        "ws_ping_timeout": heartbeat_s,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": "warning",
        "timeout_graceful_shutdown": 5,
    }
