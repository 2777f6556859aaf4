"""The component timing behind F6: CPU (every thread of this process) and wall time per `hub.publish` of the
sql:// hub, in-process, with no client — publishers one at a time (a job's events) and many at once.

    .venv/bin/python bench/push/hub_publish.py [--database-url postgresql://…] [--events 2000] [--rounds 3]
    PYTHONPATH=/tmp/hub-before/src .venv/bin/python bench/push/hub_publish.py   # another source tree (a worktree)

--paced RATE: instead, F6's shape without its clients: one publisher at RATE events/s over 200 streams, each
followed by a subscriber that counts what it is handed, on every hub of --hubs (memory, sql, redis; redis at
BENCH_REDIS_URL, default redis://127.0.0.1:6379/0, under a prefix of the run's own, deleted at the end). The paced
loop alone (no hub) is measured beside as the floor: what a wakeup per event costs on this machine.

    .venv/bin/python bench/push/hub_publish.py --paced 500 --events 3000 --rounds 3 [--hubs memory,sql,redis]

SQLite: a new database file per measurement; PostgreSQL: a schema of the run's own, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


class Counter:
    """A subscriber that only counts what it is handed (the Subscriber protocol)."""

    def __init__(self) -> None:
        self.streams: set[str] = set()
        self.offered = 0

    def offer(self, event: Event) -> None:
        self.offered += 1


async def measure_paced(url: str, database_url: str, events: int, rate: float) -> tuple[float, float]:
    """(CPU us per event, share of events handed to their subscriber) for `events` publishes paced at `rate`
    over STREAMS streams, each followed; url "" is the paced loop alone, with no hub."""
    hub = None
    counter = Counter()
    if url:
        hub = open_hub(url, database_url=database_url, history_size=1000, history_ttl_s=3600, subscriber_queue_size=10)
        await hub.start()
    try:
        if hub is not None:
            for i in range(STREAMS):
                await hub.follow(counter, f"user:u{i}")
                await hub.publish(Event("notice", {"text": "x" * 100, "seq": i}), [f"user:u{i}"])
        await asyncio.sleep(0.2)
        counter.offered = 0
        loop = asyncio.get_running_loop()
        cpu0 = cpu_s()
        start = loop.time()
        for i in range(events):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if hub is not None:
                await hub.publish(Event("notice", {"text": "x" * 100, "seq": i}), [f"user:u{i % STREAMS}"])
        await asyncio.sleep(0.05)  # the last deliveries (a broker's pub/sub message after the reply)
        cpu1 = cpu_s()
    finally:
        if hub is not None:
            await hub.close()
    return (cpu1 - cpu0) / events * 1e6, counter.offered / events if hub is not None else 1.0


def paced_main(args: argparse.Namespace) -> None:
    """--paced: every hub of --hubs and the paced loop alone, round after round (so that drift hits all alike)."""
    import redis

    base = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"nbrelay-hub-publish-{os.getpid()}"
    print(f"nbrelay from {Path(nbrelay.__file__).parent}")
    names = ["loop", *[name.strip() for name in args.hubs.split(",") if name.strip()]]
    cpu: dict[str, list[float]] = {name: [] for name in names}
    try:
        for _round in range(args.rounds):
            for name in names:
                database_url = f"sqlite:///{tempfile.mkdtemp(prefix='nbrelay-hub-publish-')}/hub.db"
                url = {"loop": "", "memory": "memory://", "sql": "sql://", "redis": f"{base}?prefix={prefix}"}[name]
                c, handed = uvloop.run(measure_paced(url, database_url, args.events, args.paced))
                if handed < 0.999:
                    raise SystemExit(f"{name}: only {handed:.1%} of the events reached their subscriber")
                cpu[name].append(c)
        floor = statistics.median(cpu["loop"])
        for name in names:
            c = statistics.median(cpu[name])
            print(
                f"{name:>6}, paced at {args.paced:g}/s: CPU {c:.0f} us/event "
                f"({min(cpu[name]):.0f}..{max(cpu[name]):.0f}), {c - floor:+.0f} over the loop alone, n={args.rounds}",
                flush=True,
            )
    finally:
        with redis.Redis.from_url(base) as client:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default="", help="postgresql://… (default: SQLite files in a temp folder)")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paced", type=float, default=0.0, help="events/s: F6's shape (see above)")
    parser.add_argument("--hubs", default="memory,sql,redis", help="--paced: which hubs")
    args = parser.parse_args()
    if args.paced:
        paced_main(args)
        return
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
