"""The component timing behind F6: CPU (every thread of this process) and wall time per `hub.publish` of the
sql:// hub, in-process, with no client — publishers one at a time (a job's events) and many at once.

    .venv/bin/python bench/push/hub_publish.py [--database-url postgresql://…] [--events 2000] [--rounds 3]
    PYTHONPATH=/tmp/hub-before/src .venv/bin/python bench/push/hub_publish.py   # another source tree (a worktree)

SQLite: a new database file per measurement; PostgreSQL: a schema of the run's own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nbrelay
from nbrelay.hub import open_hub
from nbrelay.models import Event
from run import drop_schemas, postgres_schema

STREAMS = 200


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(database_url: str, events: int, at_once: int) -> tuple[float, float]:
    """(CPU us, wall us) per event for `events` publishes, `at_once` publishers in parallel."""
    hub = open_hub("sql://", database_url=database_url, history_size=1000, history_ttl_s=3600, subscriber_queue_size=10)
    await hub.start()
    try:
        for i in range(STREAMS):  # every stream exists: what is measured is the steady state
            await hub.publish(Event("notice", {"text": "x" * 100, "seq": i}), [f"user:u{i}"])

        async def publisher(k: int) -> None:
            for i in range(events // at_once):
                seq = i * at_once + k
                await hub.publish(Event("notice", {"text": "x" * 100, "seq": seq}), [f"user:u{seq % STREAMS}"])

        cpu0, wall0 = cpu_s(), time.perf_counter()
        await asyncio.gather(*(publisher(k) for k in range(at_once)))
        cpu1, wall1 = cpu_s(), time.perf_counter()
    finally:
        await hub.close()
    done = events // at_once * at_once
    return (cpu1 - cpu0) / done * 1e6, (wall1 - wall0) / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help="postgresql://… (default: SQLite files in a temp folder)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"nbrelay from {Path(nbrelay.__file__).parent}")
    try:
        for at_once in (1, 8, 64):
            cpu, wall = [], []
            for round_ in range(args.rounds):
                if args.database_url:
                    url = postgres_schema(args.database_url, f"nbrelay_hub_publish_{at_once}_{round_}")
                else:
                    url = f"sqlite:///{tempfile.mkdtemp(prefix='nbrelay-hub-publish-')}/hub.db"
                c, w = uvloop.run(measure(url, args.events, at_once))
                cpu.append(c)
                wall.append(w)
            print(
                f"{'postgresql' if args.database_url else 'sqlite'}, {at_once} publisher(s) at once: CPU "
                f"{statistics.median(cpu):.0f} us/event ({min(cpu):.0f}..{max(cpu):.0f}), wall "
                f"{statistics.median(wall):.0f} us/event ({min(wall):.0f}..{max(wall):.0f}), n={args.rounds}",
                flush=True,
            )
    finally:
        drop_schemas()


if __name__ == "__main__":
    main()
