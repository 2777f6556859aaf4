"""nbrelay, as `nbrelay serve` runs it (nbrelay.server's uvicorn options and shutdown), plus benchmark-only
routes (nothing is added to the product):

POST /bench/publish  {"streams": [...], "count": n, "size": bytes, "rate": per_s}
     publishes `count` "notice" events through app.state.push.hub, round-robin over `streams`, paced
GET  /bench/ping     {"ok": true}: how long a request waits (F4 asks one every 50 ms while it holds N connections)
GET  /bench/rusage   this process's CPU seconds, ru_maxrss, VmRSS, GC runs and open push connections
POST /bench/gc       experiments by hand: time a full collection, gc.freeze(), thresholds

python bench/push/server.py --port P --workspace DIR --data-dir DIR   (other settings: NBRELAY_* env)
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import Body

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared import paced, payload, raise_fd_limit, rusage, uvicorn_options

from nbrelay.app import create_app
from nbrelay.config import Settings
from nbrelay.models import Event


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    raise_fd_limit(0)

    settings = Settings(port=args.port, workspace=args.workspace, data_dir=args.data_dir, workers=args.workers)
    app = create_app(settings)

    @app.post("/bench/publish", include_in_schema=False)
    async def bench_publish(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        hub = app.state.push.hub
        streams = [str(s) for s in body.get("streams") or ["broadcast"]]
        size = int(body.get("size", 100))

        async def one(i: int, due: float) -> None:
            await hub.publish(Event("notice", payload(size, i, due)), [streams[i % len(streams)]])

        return await paced(int(body.get("count", 1)), float(body.get("rate", 0)), one)

    @app.post("/bench/gc", include_in_schema=False)
    async def bench_gc(body: dict[str, Any] = Body(...)) -> dict[str, Any]:
        """For experiments only (run.py does not call it): {"freeze": true} moves every object alive now out of
        the collector's reach; {"collect": true} times a full collection; {"threshold": [700, 10, 10]} sets
        the collection thresholds."""
        took = None
        if body.get("collect"):
            started = time.perf_counter()
            gc.collect()
            took = time.perf_counter() - started
        if body.get("freeze"):
            gc.collect()
            gc.freeze()
        if body.get("threshold"):
            gc.set_threshold(*[int(x) for x in body["threshold"]])
        tracked = len(gc.get_objects())
        return {"collect_s": took, "tracked": tracked, "frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}

    @app.get("/bench/ping", include_in_schema=False)
    async def bench_ping() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/bench/rusage", include_in_schema=False)
    async def bench_rusage() -> dict[str, Any]:
        push = getattr(app.state, "push", None)
        return rusage(len(push.connections) if push is not None else 0)

    if os.environ.get("BENCH_TRACEMALLOC"):
        add_tracemalloc_route(app)
    try:  # exactly as `nbrelay serve` runs it, where the tree has nbrelay.server
        from nbrelay.server import Server, server_config
    except ImportError:
        uvicorn.run(app, **uvicorn_options(settings.port, settings.heartbeat_s))
    else:
        Server(server_config(app, settings)).run()


def add_tracemalloc_route(app: Any) -> None:
    """BENCH_TRACEMALLOC=1: GET /bench/tracemalloc?mark=1 takes a baseline snapshot; GET /bench/tracemalloc
    answers the Python allocations grown since, by line (for analysing memory per connection by hand)."""
    import tracemalloc

    tracemalloc.start(int(os.environ.get("BENCH_TRACEMALLOC_FRAMES", "1")))
    marks: list[tracemalloc.Snapshot] = []

    @app.get("/bench/tracemalloc", include_in_schema=False)
    async def bench_tracemalloc(mark: bool = False, top: int = 40, key: str = "lineno") -> dict[str, Any]:
        snapshot = tracemalloc.take_snapshot()
        if mark or not marks:
            marks[:] = [snapshot]
            return {"marked": True}
        stats = snapshot.compare_to(marks[0], key)
        return {
            "total_diff_kib": sum(s.size_diff for s in stats) / 1024,
            "top": [
                {
                    "kib": s.size_diff / 1024,
                    "count": s.count_diff,
                    "where": str(s.traceback).split("site-packages/")[-1],
                }
                for s in stats[:top]
            ],
        }


if __name__ == "__main__":
    main()
