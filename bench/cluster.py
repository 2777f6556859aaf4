"""Scale-out benchmarks: jobs through Celery workers, each against a baseline measured in the same run.

    .venv/bin/python bench/cluster.py [--quick] [--jobs 20]

C1  tiny notebooks, jobs/min: celery executor, 1 worker x 2 slots   vs  local executor, 2 slots      (target >= 0.9)
C2  tiny notebooks, jobs/min: celery, 2 workers x 1 slot             vs  celery, 1 worker x 1 slot    (target >= 1.6)

Measured from the client's side as a user waits: the batch is submitted over HTTP to the web node and ends when
the last job is seen finished (polled every 20 ms), its report served. Rounds alternate the two sides so both see
the same neighbours on the shared cores. The celery side runs on this machine's PostgreSQL and Redis (a schema
and a key prefix of its own, removed afterwards). Prints a table and writes bench/results/cluster.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import redis

from common import PYTHON, Sample, Server, clean_env, spread, stop_tree
from notebooks import TINY_NAME, write_tiny

RESULTS = Path(__file__).resolve().parent / "results" / "cluster.json"
POSTGRES = os.environ.get("NBRELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("NBRELAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POLL_S = 0.02
WARM_S = 5.0
PARAMS = {"x": 5}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Worker:
    """`nbrelay worker` in its own session; stop() ends it and everything it started."""

    def __init__(self, tmp: Path, name: str, env: dict[str, str], slots: int):
        self.log_path = tmp / f"{name}.log"
        self.env = {**clean_env(tmp), **env, "NBRELAY_DATA_DIR": str(tmp / name)}
        self.slots = slots
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        cmd = [str(PYTHON), "-m", "nbrelay", "worker", "--workers", str(self.slots), "--loglevel", "WARNING"]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited:\n{self.log_path.read_text(errors='replace')[-2000:]}")
            if "ready" in self.log_path.read_text(errors="replace") or self._consuming():
                return
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready within {timeout_s:g} s")

    def _consuming(self) -> bool:
        # At WARNING, Celery prints no "ready": a worker whose pool processes are up is taken as ready.
        assert self.proc is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            return len(psutil.Process(self.proc.pid).children(recursive=True)) >= self.slots
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_tree(proc, grace_s=30)


@contextmanager
def postgres_schema() -> Iterator[str]:
    schema = f"nbrelay_bench_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def redis_prefix() -> Iterator[str]:
    prefix = f"nbrelay-bench-{secrets.token_hex(4)}"
    try:
        yield prefix
    finally:
        client = redis.Redis.from_url(REDIS)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)


@contextmanager
def deployment(kind: str, *, workers: int, slots: int) -> Iterator[Server]:
    """A warmed web node and, for celery, `workers` workers with `slots` each; the web node to submit to."""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"nbrelay-bench-{kind}-")))
        workspace = tmp / "workspace"
        write_tiny(workspace)
        (tmp / "reports").mkdir(exist_ok=True)  # shared folders exist before a worker starts (it refuses else)
        env: dict[str, str] = {}
        if kind == "celery":
            env = {
                "NBRELAY_EXECUTOR": "celery",
                "NBRELAY_DATABASE_URL": stack.enter_context(postgres_schema()),
                "NBRELAY_BROKER_URL": f"{REDIS}?prefix={stack.enter_context(redis_prefix())}",
                "NBRELAY_WORKSPACE": str(workspace),
                "NBRELAY_REPORTS_DIR": str(tmp / "reports"),
                "NBRELAY_SECRET_KEY": secrets.token_hex(16),
            }
        server = Server(tmp, workspace, workers=slots, env=env)
        stack.callback(server.stop)
        server.start()
        for i in range(workers if kind == "celery" else 0):
            worker = Worker(tmp, f"worker{i}", env, slots)
            stack.callback(worker.stop)
            worker.start()
        time.sleep(WARM_S)  # worker processes pre-start kernels and warm the exporter
        for _ in range(2 * slots * max(1, workers)):  # every worker process has run a job once
            server.run_one(TINY_NAME, PARAMS, POLL_S)
        yield server


def batch(server: Server, jobs: int) -> float:
    """Submit `jobs` tiny notebooks, wait until all succeeded with reports; jobs per minute."""
    start = time.perf_counter()
    ids = [server.submit(TINY_NAME, PARAMS) for _ in range(jobs)]
    done = [server.wait_done(job_id, POLL_S, timeout_s=300) for job_id in ids]
    elapsed = time.perf_counter() - start
    for job in done:  # checked, not timed
        server.wait_report(job["report_url"], POLL_S)
    return jobs / elapsed * 60


def compare(
    key: str,
    name: str,
    ours: tuple[str, dict[str, int]],
    base: tuple[str, dict[str, int]],
    *,
    jobs: int,
    rounds: int,
    target: float,
) -> dict[str, Any]:
    """Rounds of [ours, baseline], each on a deployment started for it."""
    a, b = Sample(), Sample()
    for i in range(rounds):
        for (kind, shape), sample, label in ((ours, a, "ours"), (base, b, "baseline")):
            with deployment(kind, **shape) as server:
                sample.add(batch(server, jobs))
            say(f"  {key} round {i + 1}/{rounds} {label} {kind} {shape}: {sample.values[-1]:.0f} jobs/min")
    ratio = a.median / b.median
    return {
        "key": key,
        "name": name,
        "ours": {
            "setup": f"{ours[0]} {ours[1]}",
            "jobs_per_min": a.values,
            "median": a.median,
            "spread": spread(a, "n"),
        },
        "baseline": {
            "setup": f"{base[0]} {base[1]}",
            "jobs_per_min": b.values,
            "median": b.median,
            "spread": spread(b, "n"),
        },
        "ratio": ratio,
        "target": f">= {target}",
        "passed": ratio >= target,
        "jobs": jobs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round instead of three")
    parser.add_argument("--jobs", type=int, default=20, help="jobs per batch")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    rows = [
        compare(
            "C1",
            "jobs/min, celery 1x2 vs local 2 slots",
            ("celery", {"workers": 1, "slots": 2}),
            ("local", {"workers": 1, "slots": 2}),
            jobs=args.jobs,
            rounds=rounds,
            target=0.9,
        ),
        compare(
            "C2",
            "jobs/min, celery 2 workers x 1 slot vs 1 x 1",
            ("celery", {"workers": 2, "slots": 1}),
            ("celery", {"workers": 1, "slots": 1}),
            jobs=args.jobs,
            rounds=rounds,
            target=1.6,
        ),
    ]
    print(f"{'':4} {'benchmark':44} {'ours':>22} {'baseline':>22} {'ratio':>6}  target")
    for row in rows:
        print(
            f"{row['key']:4} {row['name']:44} {row['ours']['median']:>8.0f} ({row['ours']['setup']}) "
            f"{row['baseline']['median']:>8.0f} ({row['baseline']['setup']}) {row['ratio']:>6.2f}  {row['target']} "
            f"{'PASS' if row['passed'] else 'MISS'}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"when": datetime.now(UTC).isoformat(), "rows": rows}, indent=2))
    return 0 if all(row["passed"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
