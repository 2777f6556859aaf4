"""What a WebSocket connect costs a user with a long history of jobs, from the client's side: connect to /ws →
the `snapshot` (the user's unfinished jobs) received, for a user who ran N jobs that have all finished, against
the same connect for a user who ran none (the baseline, measured in the same run). Every connect reads the
snapshot, so its cost must not grow with what the user ran before.

    .venv/bin/python bench/push/connect_history.py [--jobs 200000] [--connects 40] [--src before=/tmp/wt/src]

Each tree (this one, and any --src: another source tree, e.g. a git worktree of an older commit) makes its own
database with its own migrations; the finished jobs are inserted directly. The server is bench/push/server.py
(`nbrelay serve`'s options) with header sign-in, so that the user is not the admin (whose snapshot is every
user's unfinished jobs, found by state alone).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
USER = "alice"
_MAKE_SCHEMA = """
import asyncio, sys
from nbrelay.config import Settings
from nbrelay.store import open_store
settings = Settings(workspace=sys.argv[1], data_dir=sys.argv[2])
settings.data_dir.mkdir(parents=True, exist_ok=True)
async def main():
    store = open_store(settings.database_url)
    await store.start()
    await store.close()
asyncio.run(main())
"""


def prepare(src: Path, tmp: Path, jobs: int) -> None:
    """The tree's own schema in tmp/data, then `jobs` finished jobs of USER."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    subprocess.run([sys.executable, "-c", _MAKE_SCHEMA, str(tmp / "workspace"), str(tmp / "data")], env=env, check=True)
    (database,) = (tmp / "data").glob("*.db")
    with sqlite3.connect(database) as db:
        db.executemany(
            "INSERT INTO jobs (owner, notebook, kernel_name, parameters, state, created_at, finished_at, "
            "progress_cell, progress_total, cancel_requested, attempt) VALUES (?, ?, 'python3', '{}', 'succeeded', "
            "'2026-12-01 10:00:00', '2026-12-01 10:01:00', 1, 1, 0, 1)",
            ((USER, f"reports/nb{i % 50}.ipynb") for i in range(jobs)),
        )


def measure(src: Path, jobs: int, connects: int) -> dict[str, Any]:
    """Connect → snapshot, `connects` times one after another (the first 5 not counted: warming up)."""
    tmp = Path(tempfile.mkdtemp(prefix="nbrelay-connect-history-"))
    server = Server("nbrelay", tmp, "sql://", str(src), env={"NBRELAY_AUTH_MODE": "header"})
    prepare(src, server.tmp, jobs)
    try:
        server.start()
        took: list[float] = []
        cpu_before = 0.0
        for i in range(connects):
            if i == 5:  # the first 5 warm up; the server's CPU is read around the rest, all together
                cpu_before = server.rusage()["cpu_s"]
            started = time.perf_counter()
            ws_url = f"ws://127.0.0.1:{server.port}/ws"
            with connect(ws_url, origin=server.url, additional_headers={"X-Forwarded-User": USER}) as ws:
                ops = [json.loads(ws.recv(timeout=30))["op"] for _ in range(2)]
                elapsed = time.perf_counter() - started
            if ops != ["welcome", "snapshot"]:
                raise RuntimeError(f"expected welcome and snapshot, got {ops}")
            if i >= 5:
                took.append(elapsed * 1000)
        cpu_ms = (server.rusage()["cpu_s"] - cpu_before) * 1000 / len(took)
        return {"median_ms": statistics.median(took), "min_ms": min(took), "max_ms": max(took),
                "server_cpu_ms": cpu_ms, "n": len(took)}  # fmt: skip
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200_000, help="finished jobs of the user (default 200,000)")
    parser.add_argument("--connects", type=int, default=40)
    parser.add_argument("--src", action="append", default=[], metavar="NAME=DIR", help="another source tree beside")
    args = parser.parse_args()
    trees = [("this tree", ROOT / "src"), *((name, Path(d)) for name, _, d in (s.partition("=") for s in args.src))]
    print(f"connect to /ws -> snapshot received, {args.connects - 5} connects one after another (median, min..max)")
    for name, src in trees:
        none, many = (measure(src, jobs, args.connects) for jobs in (0, args.jobs))
        for label, r in (("no jobs (baseline)", none), (f"{args.jobs:,} finished jobs", many)):
            print(
                f"  {name}, {label}: {r['median_ms']:.1f} ms ({r['min_ms']:.1f}..{r['max_ms']:.1f}), server CPU "
                f"{r['server_cpu_ms']:.1f} ms per connect"
            )
        print(f"  {name}: {args.jobs:,} finished jobs / none: x{many['median_ms'] / none['median_ms']:.2f}", flush=True)


if __name__ == "__main__":
    main()
