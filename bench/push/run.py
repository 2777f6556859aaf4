"""Push benchmarks, each against a baseline measured by the same command in the same run.

    .venv/bin/python bench/push/run.py [--quick] [--only F4,F5,F6,F6C] [--profile]

F4  server memory per idle WebSocket, N held by one process     vs  python-socketio AsyncServer, same N
F5  server CPU per delivered message, broadcast to N clients    vs  `await sio.emit(...)` to all N clients
F6  per-user event latency publish → client (200 users), with     vs  `await sio.emit(..., to=sid)`
    the durable hubs sql:// and redis:// (and memory:// beside;
    beside too: python-socketio in its multi-node mode, its Redis manager)
F6C F6 across two nodes: published on node A, clients on node B,  vs  F6 on one node (sql://)
    the events going through Redis (redis://)

F6 (its redis:// variant) and F6C need the Redis at BENCH_REDIS_URL (default redis://127.0.0.1:6379/0); its keys
go under a prefix of the run's own, deleted at the end.

Needs python-socketio (benchmark only, not a dependency of nbrelay):  uv pip install -p .venv python-socketio
--profile also needs py-spy:  uv pip install -p .venv py-spy

Servers: bench/push/server.py (nbrelay with two benchmark-only routes) and bench/push/socketio_server.py, each
in its own process group on a free loopback port, with the uvicorn options of `nbrelay serve`. Load: separate
processes of bench/push/loadclient.py. Prints a table and writes bench/results/push.json.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared import raise_fd_limit

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON = Path(sys.executable)
RESULTS = HERE.parent / "results" / "push.json"
HEARTBEAT_S = 25.0
SIZE = 100  # bytes of text in each event's data
DELIVERED_PER_S = 10_000  # F5: events/s is chosen so that N clients receive this many messages per second
F5_SECONDS = 10.0
F6_USERS = 200
F6_RATE = 500.0
F6C_TARGET_P99_MS = 20.0
CONNECTIONS_PER_CLIENT = 20_000  # per load-client process, each from a source address of its own (127.0.0.2, .3, …)
MAX_CONNECTIONS = 250_000  # the server's limits (NBRELAY_MAX_CONNECTIONS and per user), above any N here
OPEN_CONCURRENCY = 500  # WebSocket handshakes in flight at once, over all load-client processes
DELIVERY_TIMEOUT_S = 120.0
# F5 and F6 run nbrelay twice: with its default hub (sql://, every event written to the job database first)
# and with memory:// (fan-out only); the ratio and target use the default.
VARIANTS = {"nbrelay": ("nbrelay", "sql://"), "nbrelay_memory": ("nbrelay", "memory://"), "socketio": ("socketio", "")}

_live: list[subprocess.Popen[Any]] = []  # every process group started here, ended in stop_all()
# --database-url: the job database (and sql:// hub history) of every nbrelay server, in a schema of its own
DATABASE: dict[str, str] = {"url": ""}
_schemas: list[tuple[str, str]] = []  # (libpq URL, schema) made here, dropped in stop_all()


def postgres_schema(url: str, schema: str) -> str:
    """A new schema on the PostgreSQL at `url` (dropped at the end of the run): the URL that works in it."""
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(url)
    libpq = base.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    _schemas.append((libpq, schema))
    return base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


def drop_schemas() -> None:
    import psycopg

    for libpq, schema in _schemas:
        with contextlib.suppress(psycopg.Error), psycopg.connect(libpq, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
    _schemas.clear()


# processes ---------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def end_group(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM the process group `proc` leads, then SIGKILL it if it outlives the grace period."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (worker processes), if any
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    if proc in _live:
        _live.remove(proc)


def stop_all() -> None:
    for proc in list(_live):
        end_group(proc, grace_s=3.0)


def bench_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NBRELAY_", "BENCH_"))}
    runtime = tmp / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "JUPYTER_RUNTIME_DIR": str(runtime),
            "NBRELAY_RUNTIME_DIR": str(runtime),
            "PYTHONUNBUFFERED": "1",
            "NBRELAY_AUTH_MODE": "none",
            "NBRELAY_HEARTBEAT_S": f"{HEARTBEAT_S:g}",
            "NBRELAY_CLIENT_IDLE_TIMEOUT_S": "60",
            "NBRELAY_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
            "NBRELAY_MAX_CONNECTIONS_PER_USER": str(MAX_CONNECTIONS),
            # no warm kernel: the push benchmarks run no notebook, and an idle kernel only adds noise
            "NBRELAY_KERNEL_POOL_SIZE": "0",
        }
    )
    return env


class Server:
    """nbrelay (bench/push/server.py) or the python-socketio baseline, in its own process group."""

    def __init__(self, kind: str, tmp: Path, broker: str = "sql://", src: str = "", env: dict[str, str] | None = None):
        self.kind = kind
        self.broker = broker
        self.src = src  # another nbrelay source tree to run (PYTHONPATH), e.g. a `git worktree` of an older commit
        self.env = env or {}  # settings over bench_env's (NBRELAY_AUTH_MODE=header: prime() then opens nothing)
        self.tmp = tmp / f"{kind}-{free_port()}"
        self.tmp.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(base_url=self.url, timeout=10)

    def start(self) -> Server:
        if self.kind == "nbrelay":
            cmd = [str(PYTHON), str(HERE / "server.py"), "--port", str(self.port)]
            cmd += ["--workspace", str(self.tmp / "workspace"), "--data-dir", str(self.tmp / "data"), "--workers", "1"]
        else:
            cmd = [str(PYTHON), str(HERE / "socketio_server.py"), "--port", str(self.port)]
            cmd += ["--heartbeat-s", f"{HEARTBEAT_S:g}"]
            if self.broker.startswith("redis"):  # python-socketio's multi-node mode, on the run's Redis and prefix
                redis_url, _, query = self.broker.partition("?prefix=")
                cmd += ["--redis-url", redis_url, "--channel", f"{query}:socketio"]
        env = bench_env(self.tmp)
        env["NBRELAY_BROKER_URL"] = self.broker
        if self.src:
            env["PYTHONPATH"] = self.src
        if self.kind == "nbrelay" and DATABASE["url"]:
            env["NBRELAY_DATABASE_URL"] = postgres_schema(DATABASE["url"], f"nbrelay_bench_{os.getpid()}_{self.port}")
        env.update(self.env)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        _live.append(self.proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited at start:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/bench/rusage").status_code == 200:
                    self.prime()
                    return self
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} server not ready in 60 s:\n{self.log_tail()}")

    def prime(self) -> None:
        """One connection alone before the crowd. With the sql:// hub, the first connections of a fresh database
        race to create the rows of user:local and broadcast (SqlBackend._position: select, then insert, with no
        lock on the read path), and the losers fail with UNIQUE constraint failed: hub_streams.name."""
        if self.kind != "nbrelay" or self.env.get("NBRELAY_AUTH_MODE", "none") != "none":
            return  # (the load clients connect as the local user, which only auth mode none lets in)
        one = LoadClients(self, 1, 1, "user:local")
        try:
            ready = one.wait_ready(timeout_s=30)
            if ready["ready"] != 1:
                raise RuntimeError(f"nbrelay: the first connection failed: {ready['errors']}\n{self.log_tail()}")
        finally:
            one.stop()

    def proc_cpu_s(self) -> float:
        """CPU seconds (user + system, every thread) of the server process, read from outside in /proc/<pid>/stat:
        needs nothing of the server (its /bench/rusage should agree)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rusage(self) -> dict[str, Any]:
        response = self.http.get("/bench/rusage")
        response.raise_for_status()
        return dict(response.json())

    def publish(self, body: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        response = self.http.post("/bench/publish", json=body, timeout=timeout_s)
        response.raise_for_status()
        return dict(response.json())

    def publish_body(self, *, stream: str | None, count: int, rate: float, users: int = 0) -> dict[str, Any]:
        """The same request for either server: a broadcast, or round-robin over one stream/client per user."""
        if self.kind == "nbrelay":
            streams = [f"user:u{i}" for i in range(users)] if users else [stream or "broadcast"]
            return {"streams": streams, "count": count, "size": SIZE, "rate": rate}
        return {"to": "sids" if users else "all", "count": count, "size": SIZE, "rate": rate}

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        self.http.close()
        if self.proc is not None:
            end_group(self.proc)


class LoadClients:
    """`procs` load-client processes sharing `total` connections; they talk by JSON lines on stdin/stdout."""

    def __init__(self, server: Server, total: int, procs: int, stream: str):
        self.server = server
        self.total = total
        self.procs: list[subprocess.Popen[str]] = []
        self.replies: list[queue.Queue[dict[str, Any]]] = []
        self.logs: list[IO[bytes]] = []
        proto = "nbrelay" if server.kind == "nbrelay" else "socketio"
        procs = max(1, min(procs, total))
        first = 0
        for j in range(procs):
            count = total // procs + (1 if j < total % procs else 0)
            cmd = [str(PYTHON), str(HERE / "loadclient.py"), "--port", str(server.port), "--proto", proto]
            cmd += ["--count", str(count), "--first", str(first), "--stream", stream]
            cmd += ["--concurrency", str(max(1, OPEN_CONCURRENCY // procs)), "--ping-s", f"{HEARTBEAT_S:g}"]
            cmd += ["--max-seconds", f"{max(1200, total / 40):.0f}"]
            cmd += ["--source", f"127.0.0.{2 + j}"]  # ~28,000 ephemeral ports per source address
            first += count
            log = open(server.tmp / f"client-{j}.log", "wb")  # noqa: SIM115 - closed in stop()
            self.logs.append(log)
            proc = subprocess.Popen(
                cmd,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
            _live.append(proc)
            self.procs.append(proc)
            replies: queue.Queue[dict[str, Any]] = queue.Queue()
            threading.Thread(target=self._pump, args=(proc, replies), daemon=True).start()
            self.replies.append(replies)

    @staticmethod
    def _pump(proc: subprocess.Popen[str], replies: queue.Queue[dict[str, Any]]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                replies.put(json.loads(line))
        replies.put({"eof": True})

    def _get(self, j: int, timeout_s: float) -> dict[str, Any]:
        try:
            reply = self.replies[j].get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError(f"load client {j} did not answer in {timeout_s:.0f} s") from None
        if "eof" in reply or "fatal" in reply:
            raise RuntimeError(f"load client {j} stopped: {reply.get('fatal', 'exited')}")
        return reply

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        replies = [self._get(j, max(1.0, deadline - time.monotonic())) for j in range(len(self.procs))]
        return {
            "ready": sum(r["ready"] for r in replies),
            "failed": sum(r["failed"] for r in replies),
            "open_s": max(r["open_s"] for r in replies),
            "errors": merge_counts(r["errors"] for r in replies),
        }

    def command(self, line: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        return [self._get(j, timeout_s) for j in range(len(self.procs))]

    def stats(self) -> dict[str, Any]:
        replies = self.command("stats")
        return {
            "received": sum(r["received"] for r in replies),
            "open": sum(r["open"] for r in replies),
            "closed": merge_counts(r["closed"] for r in replies),
            "errors": merge_counts(r["errors"] for r in replies),
            "cpu_s": sum(r["cpu_s"] for r in replies),
        }

    def wait_received(self, expected: int, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            stats = self.stats()
            if stats["received"] >= expected or time.monotonic() > deadline or stats["open"] < self.total:
                return stats
            time.sleep(0.05)

    def latencies(self) -> tuple[list[float], list[float]]:
        """Every event's latency from publish start, and from its scheduled time (open loop), each sorted."""
        values = array("d")
        for j in range(len(self.procs)):
            path = self.server.tmp / f"latencies-{j}.bin"
            self.command_one(j, f"dump {path}")
            with open(path, "rb") as data:
                values.frombytes(data.read())
            path.unlink()
        return sorted(values[0::2]), sorted(values[1::2])

    def command_one(self, j: int, line: str) -> dict[str, Any]:
        proc = self.procs[j]
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
        return self._get(j, 30.0)

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write("quit\n")
                proc.stdin.close()
        for proc in self.procs:
            end_group(proc, grace_s=5.0)
        for log in self.logs:
            log.close()


def merge_counts(items: Any) -> dict[str, int]:
    merged: dict[str, int] = {}
    for item in items:
        for key, value in item.items():
            merged[key] = merged.get(key, 0) + value
    return merged


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def latency_summary(values: tuple[list[float], list[float]]) -> dict[str, float]:
    from_t, from_due = values
    return {
        "n": len(from_t),
        "p50_ms": percentile(from_t, 0.50) * 1000,
        "p99_ms": percentile(from_t, 0.99) * 1000,
        "max_ms": (from_t[-1] * 1000) if from_t else float("nan"),
        "open_loop_p50_ms": percentile(from_due, 0.50) * 1000,
        "open_loop_p99_ms": percentile(from_due, 0.99) * 1000,
    }


class MachineLoad:
    """Busy CPU of the whole machine over a window (from /proc/stat), to tell our load from anyone else's."""

    def __init__(self) -> None:
        self.start = self._read()
        self.wall = time.monotonic()

    @staticmethod
    def _read() -> tuple[float, float]:
        with open("/proc/stat") as stat:
            fields = [float(x) for x in stat.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        return sum(fields[:8]) - idle, os.sysconf("SC_CLK_TCK")

    def busy_cores(self) -> float:
        busy, ticks = self._read()
        return (busy - self.start[0]) / ticks / max(1e-9, time.monotonic() - self.wall)


class RequestProbe:
    """GET /bench/ping every interval_s from a thread of its own while something else goes on (F4: N idle
    connections across a heartbeat): how long a user's request waits for a server busy with all of them."""

    def __init__(self, server: Server, interval_s: float = 0.05):
        self.server = server
        self.interval_s = interval_s
        self.took_ms: list[float] = []
        self.failed = 0  # requests that got no answer in 30 s, or an error
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="request-probe", daemon=True)

    def __enter__(self) -> RequestProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.server.url, timeout=30) as http:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    http.get("/bench/ping").raise_for_status()
                    self.took_ms.append((time.perf_counter() - started) * 1000)
                except httpx.HTTPError:
                    self.failed += 1
                self._stop.wait(max(0.0, self.interval_s - (time.perf_counter() - started)))

    def summary(self) -> dict[str, float]:
        took = sorted(self.took_ms)
        if not took:
            return {"n": 0, "failed": self.failed}
        return {
            "n": len(took),
            "failed": self.failed,
            "p50_ms": took[len(took) // 2],
            "p99_ms": took[min(len(took) - 1, int(len(took) * 0.99))],
            "max_ms": took[-1],
        }


@contextlib.contextmanager
def server_and_clients(
    kind: str,
    tmp: Path,
    n: int,
    procs: int,
    stream: str,
    settle_s: float,
    broker: str = "sql://",
    nodes: int = 1,
    src: str = "",
) -> Any:
    """`nodes` servers on one broker, n clients on the last one; yields (the servers, clients, ready)."""
    servers: list[Server] = []
    clients: LoadClients | None = None
    try:
        for _ in range(nodes):
            servers.append(Server(kind, tmp, broker, src).start())
        time.sleep(settle_s)
        clients = LoadClients(servers[-1], n, procs, stream)
        ready = clients.wait_ready(timeout_s=max(120.0, n / 40))
        if ready["ready"] < n:
            raise RuntimeError(
                f"{kind}: only {ready['ready']} of {n} connections opened: {ready['errors']}\n{servers[-1].log_tail()}"
            )
        yield servers, clients, ready
    finally:
        if clients is not None:
            clients.stop()
        for server in servers:
            server.stop()


def settle_for(kind: str) -> float:
    # nbrelay starts its store, executor and worker process in the lifespan: let that finish before measuring
    return 4.0 if kind == "nbrelay" else 1.0


# benchmarks --------------------------------------------------------------------------------------------------
def f4_memory(kind: str, tmp: Path, n: int, hold_s: float) -> dict[str, Any]:
    """RSS of the server process before and after opening n idle connections (each subscribed), per connection."""
    server = Server(kind, tmp).start()
    clients: LoadClients | None = None
    stream = "user:local" if kind == "nbrelay" else ""
    try:
        time.sleep(settle_for(kind))
        warm = LoadClients(server, 50, 1, stream)  # first connections import and allocate once-only things
        warm.wait_ready(60)
        warm.stop()
        time.sleep(1.0)
        before = server.rusage()
        load = MachineLoad()
        clients = LoadClients(server, n, max(4, -(-n // CONNECTIONS_PER_CLIENT)), stream)
        ready = clients.wait_ready(timeout_s=max(120.0, n / 40))
        if ready["ready"] < n:
            raise RuntimeError(f"{kind}: only {ready['ready']} of {n} connections opened: {ready['errors']}")
        after_open = server.rusage()
        open_busy = load.busy_cores()
        # hold across at least one heartbeat: server ping frames, client pongs, app pings (nbrelay) / "2"→"3";
        # meanwhile a request every 50 ms: what a user's request waits while the server pings them all
        deadline = time.monotonic() + hold_s
        with RequestProbe(server) as probe:
            while time.monotonic() < deadline:
                time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
        after_hold = server.rusage()
        stats = clients.stats()
        per_conn = (after_hold["rss_kib"] - before["rss_kib"]) / n
        return {
            "n": n,
            "kib_per_conn": per_conn,
            "kib_per_conn_after_open": (after_open["rss_kib"] - before["rss_kib"]) / n,
            "rss_before_kib": before["rss_kib"],
            "rss_after_open_kib": after_open["rss_kib"],
            "rss_after_hold_kib": after_hold["rss_kib"],
            "maxrss_kib": after_hold["maxrss_kib"],
            "server_connections": after_hold["connections"],
            "open_s": ready["open_s"],
            "connect_cpu_ms_per_conn": (after_open["cpu_s"] - before["cpu_s"]) / n * 1000,
            "machine_busy_cores_while_opening": open_busy,
            "hold_s": hold_s,
            "held_cpu_s_per_s": (after_hold["cpu_s"] - after_open["cpu_s"])
            / max(1e-9, after_hold["time"] - after_open["time"]),
            "clients_open_at_end": stats["open"],
            "request_while_holding": probe.summary(),
            "closed": stats["closed"],
        }
    finally:
        if clients is not None:
            clients.stop()
        server.stop()


def profile_start(server: Server, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy", path=str(PYTHON.parent)) or shutil.which("py-spy")
    if spy is None or server.proc is None:
        print("  (py-spy not found: uv pip install -p .venv py-spy; profiling skipped)")
        return None
    cmd = [spy, "record", "--pid", str(server.proc.pid), "--duration", str(int(seconds) + 1), "--rate", "200"]
    cmd += ["--format", "raw", "--output", str(out), "--nonblocking"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _live.append(proc)
    return proc


def f5_broadcast(
    kind: str, tmp: Path, n: int, seconds: float, profile: Path | None, broker: str = "sql://"
) -> dict[str, Any]:
    """Server CPU per delivered message and publish→client latency, broadcasting to n subscribed clients."""
    rate = max(1.0, DELIVERED_PER_S / n)
    events = max(10, int(rate * seconds))
    stream = "broadcast" if kind == "nbrelay" else ""
    with server_and_clients(kind, tmp, n, 2, stream, settle_for(kind), broker) as ((server,), clients, ready):
        warm = server.publish_body(stream="broadcast", count=3, rate=10)
        server.publish(warm, timeout_s=30)
        clients.wait_received(3 * n, timeout_s=60)
        clients.command("reset")
        idle_a = server.rusage()
        time.sleep(2.0)
        idle_b = server.rusage()
        spy = profile_start(server, events / rate, profile) if profile is not None else None
        client_cpu0 = clients.stats()["cpu_s"]
        load = MachineLoad()
        before = server.rusage()
        published = server.publish(server.publish_body(stream="broadcast", count=events, rate=rate), 60 + seconds)
        stats = clients.wait_received(events * n, timeout_s=DELIVERY_TIMEOUT_S)
        after = server.rusage()
        busy = load.busy_cores()
        if spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(timeout=30)
            end_group(spy)
        latencies = clients.latencies()
    delivered = stats["received"]
    cpu = after["cpu_s"] - before["cpu_s"]
    return {
        "n": n,
        "events": events,
        "rate_events_per_s": rate,
        "published": published,
        "expected": events * n,
        "delivered": delivered,
        "server_cpu_s": cpu,
        "server_user_s": after["user_s"] - before["user_s"],
        "server_sys_s": after["sys_s"] - before["sys_s"],
        "cpu_us_per_msg": cpu / max(1, delivered) * 1e6,
        "idle_cpu_s_per_s": (idle_b["cpu_s"] - idle_a["cpu_s"]) / max(1e-9, idle_b["time"] - idle_a["time"]),
        "wall_s": after["time"] - before["time"],
        "delivered_per_s": delivered / max(1e-9, after["time"] - before["time"]),
        "client_cpu_s": stats["cpu_s"] - client_cpu0,
        "machine_busy_cores": busy,
        "ours_cores": (cpu + stats["cpu_s"] - client_cpu0) / max(1e-9, after["time"] - before["time"]),
        "gc_collections": [a - b for a, b in zip(after["gc_collections"], before["gc_collections"], strict=True)],
        "latency": latency_summary(latencies),
        "closed": stats["closed"],
        "open_s": ready["open_s"],
    }


def f6_per_user(
    kind: str, tmp: Path, users: int, rate: float, seconds: float, broker: str = "sql://", nodes: int = 1, src: str = ""
) -> dict[str, Any]:
    """Publish→client latency of events addressed to one user each, round-robin over `users` connections.
    With nodes=2 (a shared broker), the events are published on the first node and the clients are on the
    second; CPU figures are the sum over the nodes (and per node in cpu_us_per_msg_proc_nodes)."""
    stream = "user:u{i}" if kind == "nbrelay" else ""
    count = int(rate * seconds)
    with server_and_clients(kind, tmp, users, 2, stream, settle_for(kind), broker, nodes, src) as (
        servers,
        clients,
        _ready,
    ):
        publisher = servers[0]
        publisher.publish(publisher.publish_body(stream=None, count=users, rate=rate, users=users), timeout_s=30)
        clients.wait_received(users, timeout_s=60)
        clients.command("reset")
        client_cpu0 = clients.stats()["cpu_s"]
        load = MachineLoad()
        before = [server.rusage() for server in servers]
        proc_before = [server.proc_cpu_s() for server in servers]
        body = publisher.publish_body(stream=None, count=count, rate=rate, users=users)
        published = publisher.publish(body, 60 + seconds)
        stats = clients.wait_received(count, timeout_s=DELIVERY_TIMEOUT_S)
        proc_after = [server.proc_cpu_s() for server in servers]
        after = [server.rusage() for server in servers]
        busy = load.busy_cores()
        latencies = clients.latencies()
    cpu, user, sys_ = (
        sum(a[k] - b[k] for a, b in zip(after, before, strict=True)) for k in ("cpu_s", "user_s", "sys_s")
    )
    wall = after[-1]["time"] - before[-1]["time"]
    return {
        "nodes": nodes,
        "users": users,
        "rate_events_per_s": rate,
        "events": count,
        "published": published,
        "delivered": stats["received"],
        "server_cpu_s": cpu,
        "server_user_s": user,
        "server_sys_s": sys_,
        "cpu_us_per_msg": cpu / max(1, stats["received"]) * 1e6,
        "cpu_us_per_msg_proc": (sum(proc_after) - sum(proc_before)) / max(1, stats["received"]) * 1e6,
        # per node (/proc): with two, [the publishing node, the node that holds the WebSockets]
        "cpu_us_per_msg_proc_nodes": [
            (a - b) / max(1, stats["received"]) * 1e6 for a, b in zip(proc_after, proc_before, strict=True)
        ],
        "machine_busy_cores": busy,
        "ours_cores": (cpu + stats["cpu_s"] - client_cpu0) / max(1e-9, wall),
        "latency": latency_summary(latencies),
        "closed": stats["closed"],
    }


@contextlib.contextmanager
def redis_broker() -> Any:
    """A redis:// broker URL under a prefix of this run's own; its keys are deleted afterwards (only those)."""
    import redis

    base = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    prefix = f"nbrelay-bench-{os.getpid()}-{int(time.time())}"
    with redis.Redis.from_url(base, socket_connect_timeout=2) as client:
        try:
            client.ping()
        except redis.RedisError as exc:
            raise RuntimeError(
                f"F6 (its redis:// variant) and F6C need Redis at {base} ({exc}); start one: redis-server "
                '--daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no, or set BENCH_REDIS_URL'
            ) from None
        try:
            yield f"{base}?prefix={prefix}"
        finally:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)


def f6_cluster(tmp: Path, users: int, rate: float, seconds: float) -> dict[str, Any]:
    """F6 with the events published on node A and the clients on node B, through Redis."""
    with redis_broker() as broker:
        return f6_per_user("nbrelay", tmp, users, rate, seconds, broker, nodes=2)


F6_FIGURES = (("latency", "p99_ms"), ("cpu_us_per_msg_proc",))


def f6_note(variant: str, r: dict[str, Any]) -> str:
    """One line of figures for an F6 measurement."""
    if "error" in r:
        return f"{variant}: FAILED {r['error']}"
    return (
        f"{variant}: p50 {r['latency']['p50_ms']:.2f} ms, p99 {r['latency']['p99_ms']:.2f} ms, max "
        f"{r['latency']['max_ms']:.1f} ms; {r['delivered']}/{r['events']} delivered; server CPU "
        f"{r.get('cpu_us_per_msg_proc', float('nan')):.0f} us/msg (/proc; rusage {r['cpu_us_per_msg']:.0f}); "
        f"publishes late by >10 ms: {r['published']['late']} (open-loop "
        f"p99 {r['latency']['open_loop_p99_ms']:.1f} ms); machine busy {r['machine_busy_cores']:.2f} "
        f"cores, ours {r['ours_cores']:.2f}"
    )


def f6c_per_node(cluster: dict[str, Any], socketio: list[dict[str, Any]]) -> list[str]:
    """F6C's server CPU per message on each node: in a scale-out deployment jobs run on worker machines that
    publish to Redis themselves, so node B's figure is what a web node holding WebSockets spends per message."""
    if "error" in cluster:
        return []
    publishing, holding = cluster["cpu_us_per_msg_proc_nodes"]
    line = f"server CPU per message: node A (publishes) {publishing:.0f} us, node B (the WebSockets) {holding:.0f} us"
    base = median_of(socketio, "cpu_us_per_msg_proc")
    if not math.isnan(base):  # F6 ran in this run: python-socketio's, which publishes and delivers in one process
        line += f"; node B against python-socketio's one process (F6, same run, {base:.0f} us): x{holding / base:.2f}"
    return [line]


def median_of(runs: list[dict[str, Any]], *keys: str) -> float:
    values = sorted(_dig(r, keys) for r in runs if "error" not in r)
    return statistics.median(values) if values else float("nan")


def _dig(r: dict[str, Any], keys: tuple[str, ...]) -> float:
    for key in keys:
        r = r[key]
    return float(r)  # type: ignore[arg-type]


def f6_summary(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per variant: median (min..max) over the rounds of p50, p99 and server CPU per message (/proc), and the
    ratios of the medians to python-socketio's."""
    figures = {
        "p50": (("latency", "p50_ms"), "ms"),
        "p99": (("latency", "p99_ms"), "ms"),
        "CPU": (("cpu_us_per_msg_proc",), "us/msg"),
    }
    lines = []
    for variant, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        parts = []
        for name, (keys, unit) in figures.items():
            values = sorted(_dig(r, keys) for r in ok)
            if not values:
                continue
            mid, base = statistics.median(values), median_of(runs.get("socketio", []), *keys)
            parts.append(f"{name} {mid:.2f} {unit} ({values[0]:.2f}..{values[-1]:.2f}; x{mid / base:.2f} socketio)")
        lines.append(f"{variant}, median of {len(ok)}/{len(rs)}: " + "; ".join(parts))
    return lines


# report ------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    key: str
    name: str
    figure: float
    baseline: float
    unit: str
    target: str
    passed: bool
    notes: list[str] = field(default_factory=list)
    baseline_name: str = "python-socketio"

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline if self.baseline else float("nan")


def fmt(value: float, unit: str) -> str:
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


def print_row(row: Row) -> None:
    verdict = "PASS" if row.passed else "MISS"
    print(
        f"{row.key} {row.name}: nbrelay {fmt(row.figure, row.unit)}; baseline {row.baseline_name} "
        f"{fmt(row.baseline, row.unit)}; ratio {row.ratio:.2f}; target {row.target} -> {verdict}",
        flush=True,
    )
    for note in row.notes:
        print(f"    {note}", flush=True)


def print_table(rows: list[Row]) -> None:
    header = ("", "benchmark", "nbrelay", "baseline", "ratio", "target", "")
    lines = [
        (r.key, r.name, fmt(r.figure, r.unit), f"{fmt(r.baseline, r.unit)} ({r.baseline_name})", f"{r.ratio:.2f}",
         r.target, "PASS" if r.passed else "MISS")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(c)) for c in col) for col in zip(header, *lines, strict=True)]
    for line in (header, *lines):
        print("  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def machine() -> dict[str, Any]:
    versions = {}
    for dist in ("nbrelay", "uvicorn", "websockets", "uvloop", "python-socketio", "python-engineio", "fastapi"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[dist] = importlib.metadata.version(dist)
    return {
        "cpus": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
    }


def attempt(function: Any, *args: Any) -> dict[str, Any]:
    """Run one measurement; a failure is recorded (and printed) instead of ending the whole run."""
    try:
        return dict(function(*args))
    except (RuntimeError, httpx.HTTPError, OSError) as exc:
        print(f"  FAILED {function.__name__}{args[:1]}: {exc}", flush=True)
        return {"error": str(exc)[:2000]}


def source_state() -> dict[str, Any]:
    """The commit measured, and whether src/ differs from it (read-only git calls)."""
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        run = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        state["commit"] = run.stdout.strip()
        run = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        state["src_modified"] = bool(run.stdout.strip())
    return state


def check_fd_limits(n: int) -> None:
    """Server and each load-client process hold up to n sockets: raise the soft limit, stop early if it can't."""
    needed = n + 256
    soft, hard = raise_fd_limit(needed)  # inherited by the servers and load clients started from here
    if soft != resource.RLIM_INFINITY and soft < needed:
        sys.exit(
            f"error: the open-file limit is {soft} (hard {hard}); {needed} are needed for {n} connections in one "
            "server process. Raise it (ulimit -Hn / limits.conf / docker --ulimit nofile=65536) or use --quick."
        )


F4_TARGET_N = 100_000


def fit_f4(n: int, asked: bool) -> int:
    """The N that one server process can hold: the open-file limit bounds it (one descriptor per socket). The
    hard limit can only be raised with CAP_SYS_RESOURCE; without it, F4 runs at the largest N that fits and
    says so (an explicit --f4-n stops with the error instead)."""
    soft, hard = raise_fd_limit(n + 256)
    if soft == resource.RLIM_INFINITY or soft >= n + 256 or asked:
        return n
    fitted = (soft - 500) // 500 * 500
    print(
        f"NOTE: F4 asks for {n:,} connections in one server process, but the open-file limit is {soft:,} (hard "
        f"{hard:,}; raising it needs CAP_SYS_RESOURCE, which this process lacks): F4 runs at N = {fitted:,}",
        flush=True,
    )
    return fitted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller N and shorter runs, for a fast check")
    parser.add_argument("--only", default="F4,F5,F6,F6C", help="comma-separated subset of F4,F5,F6,F6C")
    parser.add_argument("--profile", action="store_true", help="py-spy raw profiles of both servers in F5")
    parser.add_argument(
        "--database-url",
        default="",
        help="postgresql://…: every nbrelay server keeps its jobs and sql:// hub history there, in a schema of its "
        "own (default: SQLite in the server's data folder)",
    )
    parser.add_argument("--f4-n", type=int, default=0, help="F4: idle connections (default 100,000; 2,000 quick)")
    parser.add_argument("--repeat", type=int, default=1, help="F6: rounds of every variant (medians and spread)")
    for flag, hub in (("--src", "sql://"), ("--src-redis", "redis://")):
        parser.add_argument(
            flag,
            action="append",
            default=[],
            type=lambda value: tuple(value.split("=", 1)),
            metavar="NAME=DIR",
            help=f"F6: also run nbrelay on {hub} from another source tree, e.g. before=/tmp/hub-before/src made by "
            "`git worktree add /tmp/hub-before <commit>` (never a stash or reset of the shared tree)",
        )
    args = parser.parse_args()
    only = {part.strip().upper() for part in args.only.split(",") if part.strip()}
    DATABASE["url"] = args.database_url
    results_database = args.database_url.split("@")[-1] if args.database_url else "sqlite"
    if only & {"F4", "F5", "F6"} and importlib.util.find_spec("socketio") is None:
        print(
            "bench/push/run.py needs python-socketio for its baseline (not an nbrelay dependency):\n"
            "    uv pip install -p .venv python-socketio",
            file=sys.stderr,
        )
        return 2
    f4_n = args.f4_n or (2000 if args.quick else F4_TARGET_N)
    if "F4" in only:
        f4_n = fit_f4(f4_n, asked=bool(args.f4_n))
    f4_hold = 5.0 if args.quick else HEARTBEAT_S + 5
    f5_ns = [500] if args.quick else [1000, 5000]
    f5_seconds = 3.0 if args.quick else F5_SECONDS
    f6_seconds = 3.0 if args.quick else 10.0
    check_fd_limits(f4_n if "F4" in only else max(f5_ns))

    results: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"), "quick": args.quick}
    results["machine"] = machine()
    results["source"] = source_state()
    results["database"] = results_database
    idle_check = MachineLoad()
    time.sleep(2.0)
    results["machine_busy_cores_before"] = busy = idle_check.busy_cores()
    if busy > 0.3:
        print(
            f"WARNING: the machine is already busy ({busy:.2f} cores used by other processes): CPU per message and "
            "above all latencies will be worse than on a quiet machine",
            flush=True,
        )
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="nbrelay-push-bench-"))
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def on_signal(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in previous:
        signal.signal(sig, on_signal)
    started = time.monotonic()
    stack = contextlib.ExitStack()
    try:
        if "F4" in only:
            print(f"F4: {f4_n} idle WebSockets per server, held {f4_hold:.0f} s ...", flush=True)
            f4 = {kind: attempt(f4_memory, kind, tmp, f4_n, f4_hold) for kind in ("nbrelay", "socketio")}
            results["F4"] = f4
            if any("error" in r for r in f4.values()):
                raise RuntimeError(f"F4 failed: {f4}")
            mine, base = f4["nbrelay"]["kib_per_conn"], f4["socketio"]["kib_per_conn"]
            row = Row(
                "F4",
                f"memory per idle WebSocket (N={f4_n:,})",
                mine,
                base,
                "KiB",
                f"<= 5 KiB at N = {F4_TARGET_N:,}",
                mine <= 5 and f4_n >= F4_TARGET_N,
            )
            row.notes.append(
                f"RSS {f4['nbrelay']['rss_before_kib'] / 1024:.0f} -> {f4['nbrelay']['rss_after_hold_kib'] / 1024:.0f}"
                f" MiB (nbrelay), {f4['socketio']['rss_before_kib'] / 1024:.0f} -> "
                f"{f4['socketio']['rss_after_hold_kib'] / 1024:.0f} MiB (socketio); right after opening: "
                f"{f4['nbrelay']['kib_per_conn_after_open']:.1f} vs {f4['socketio']['kib_per_conn_after_open']:.1f} KiB"
            )
            row.notes.append(
                f"idle CPU while held: {f4['nbrelay']['held_cpu_s_per_s'] * 100:.1f}% vs "
                f"{f4['socketio']['held_cpu_s_per_s'] * 100:.1f}% of a core; clients still open at the end: "
                f"{f4['nbrelay']['clients_open_at_end']} vs {f4['socketio']['clients_open_at_end']}"
            )
            waits = {kind: f4[kind]["request_while_holding"] for kind in f4}
            row.notes.append(
                "a request every 50 ms while held (across a heartbeat of all N): "
                + "; ".join(
                    f"{kind} p50 {w.get('p50_ms', float('nan')):.1f} ms, p99 {w.get('p99_ms', float('nan')):.1f} ms, "
                    f"max {w.get('max_ms', float('nan')):.0f} ms (n={w['n']}, failed {w['failed']})"
                    for kind, w in waits.items()
                )
            )
            row.notes.append(
                f"opening: {f4['nbrelay']['open_s']:.0f} s vs {f4['socketio']['open_s']:.0f} s; server CPU per "
                f"connect {f4['nbrelay']['connect_cpu_ms_per_conn']:.1f} ms vs "
                f"{f4['socketio']['connect_cpu_ms_per_conn']:.1f} ms"
            )
            if any(f4[k]["clients_open_at_end"] < f4_n for k in f4):
                row.notes.append(f"WARNING: connections were closed during the hold: {[f4[k]['closed'] for k in f4]}")
            print_row(row)
            rows.append(row)
        if "F5" in only:
            results["F5"] = {}
            for n in f5_ns:
                print(f"F5: broadcast to {n} clients for {f5_seconds:.0f} s ...", flush=True)
                f5: dict[str, Any] = {}
                for variant, (kind, broker) in VARIANTS.items():
                    spy = RESULTS.parent / f"push-F5-{n}-{variant}.pyspy.txt" if args.profile else None
                    f5[variant] = attempt(f5_broadcast, kind, tmp, n, f5_seconds, spy, broker)
                results["F5"][str(n)] = f5
                mine, base = (f5[v].get("cpu_us_per_msg", float("nan")) for v in ("nbrelay", "socketio"))
                row = Row("F5", f"server CPU per delivered msg, broadcast N={n}", mine, base, "us", "ratio <= 0.33",
                          mine / base <= 1 / 3)  # fmt: skip
                for variant, r in f5.items():
                    if "error" in r:
                        row.notes.append(f"{variant}: FAILED {r['error']}")
                        continue
                    row.notes.append(
                        f"{variant}: {r['cpu_us_per_msg']:.1f} us/msg; {r['delivered']}/{r['expected']} delivered at "
                        f"{r['delivered_per_s']:.0f} msg/s; server CPU {r['server_cpu_s']:.2f} s "
                        f"(user {r['server_user_s']:.2f}, sys {r['server_sys_s']:.2f}), clients CPU "
                        f"{r['client_cpu_s']:.2f} s; latency p50 {r['latency']['p50_ms']:.1f} ms, p99 "
                        f"{r['latency']['p99_ms']:.1f} ms; GC runs per generation {r['gc_collections']}; machine busy "
                        f"{r['machine_busy_cores']:.2f} cores, ours {r['ours_cores']:.2f}"
                    )
                print_row(row)
                rows.append(row)
        if "F6" in only:
            variants = {name: (kind, broker, "") for name, (kind, broker) in VARIANTS.items()}
            redis_url = stack.enter_context(redis_broker())
            variants["nbrelay_redis"] = ("nbrelay", redis_url, "")  # the other durable hub (history in Redis)
            # beside, not the baseline: python-socketio's own multi-node mode (its Redis manager: no history)
            variants["socketio_redis"] = ("socketio", redis_url, "")
            for name, src in args.src:
                variants[f"nbrelay@{name}"] = ("nbrelay", "sql://", src)
            for name, src in args.src_redis:
                variants[f"nbrelay_redis@{name}"] = ("nbrelay", redis_url, src)
            print(f"F6: {F6_USERS} users, {F6_RATE:.0f} events/s for {f6_seconds:.0f} s, {args.repeat} round(s) of "
                  f"{', '.join(variants)} ...", flush=True)  # fmt: skip
            runs: dict[str, list[dict[str, Any]]] = {variant: [] for variant in variants}
            for _ in range(args.repeat):  # rounds of every variant in turn: all see the same neighbours
                for variant, (kind, broker, src) in variants.items():
                    runs[variant].append(attempt(f6_per_user, kind, tmp, F6_USERS, F6_RATE, f6_seconds, broker, 1, src))
                    print(f"    {f6_note(variant, runs[variant][-1])}", flush=True)
            results["F6"] = {variant: rs[-1] for variant, rs in runs.items()}
            results["F6_runs"] = runs
            base_p99, base_cpu = (median_of(runs["socketio"], *keys) for keys in F6_FIGURES)
            for variant, hub in (("nbrelay", "sql://"), ("nbrelay_redis", "redis://")):
                p99, cpu = (median_of(runs[variant], *keys) for keys in F6_FIGURES)
                row = Row(
                    "F6",
                    f"per-user latency p99, durable hub {hub} ({F6_USERS} users)",
                    p99,
                    base_p99,
                    "ms",
                    "p99 and CPU/msg <= socketio's",
                    p99 <= base_p99 and cpu <= base_cpu,
                )
                row.notes.append(f"server CPU per message {cpu:.0f} us vs {base_cpu:.0f} us: x{cpu / base_cpu:.2f}")
                if variant == "nbrelay_redis" and runs["socketio_redis"]:
                    mp99, mcpu = (median_of(runs["socketio_redis"], *keys) for keys in F6_FIGURES)
                    row.notes.append(
                        f"beside (not the target): python-socketio's multi-node mode, its Redis manager (no history): "
                        f"p99 {mp99:.2f} ms, CPU {mcpu:.0f} us/msg; redis:// against it: p99 x{p99 / mp99:.2f}, "
                        f"CPU x{cpu / mcpu:.2f}"
                    )
                if variant == "nbrelay":
                    row.notes += f6_summary(runs)
                print_row(row)
                rows.append(row)
        if "F6C" in only:
            print(f"F6C: {F6_USERS} users on node B, {F6_RATE:.0f} events/s published on node A through Redis, "
                  f"for {f6_seconds:.0f} s; and on one node (sql://) ...", flush=True)  # fmt: skip
            single = results.get("F6", {}).get("nbrelay") or attempt(
                f6_per_user, "nbrelay", tmp, F6_USERS, F6_RATE, f6_seconds, "sql://"
            )
            cluster = attempt(f6_cluster, tmp, F6_USERS, F6_RATE, f6_seconds)
            results["F6C"] = {"nbrelay_cluster": cluster, "nbrelay": single}
            mine, base = (r.get("latency", {}).get("p99_ms", float("nan")) for r in (cluster, single))
            target = F6C_TARGET_P99_MS
            name = f"per-user latency p99, node A -> Redis -> node B ({F6_USERS} users)"
            row = Row(
                "F6C", name, mine, base, "ms", f"<= {target:g} ms", mine <= target, baseline_name="one node, sql://"
            )
            row.notes += [f6_note("two nodes, redis://", cluster), f6_note("one node, sql://", single)]
            row.notes += f6c_per_node(cluster, results.get("F6_runs", {}).get("socketio", []))
            print_row(row)
            rows.append(row)
    finally:
        stop_all()
        stack.close()
        drop_schemas()
        shutil.rmtree(tmp, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    results["elapsed_s"] = time.monotonic() - started
    results["rows"] = [{**asdict(r), "ratio": r.ratio} for r in rows]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print_table(rows)
    print(f"\n{results['machine']['cpus']} CPUs, Python {results['machine']['python']}; {results['elapsed_s']:.0f} s; "
          f"written to {RESULTS.relative_to(ROOT)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
