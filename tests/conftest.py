"""Shared fixtures: a workspace of test notebooks, and a real nbrelay server process on a free port."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import psycopg
import pytest
import redis
from psycopg import sql
from redis.backoff import NoBackoff
from redis.retry import Retry
from sqlalchemy.engine import make_url

NOTEBOOKS = Path(__file__).parent / "notebooks"


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()  # by free_port in this process: never handed out twice


def _share(low: int, high: int) -> tuple[int, int]:
    """This test process's own part of [low, high): each pytest-xdist worker picks from a part of its own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    if count <= 1 or index >= count:
        return low, high
    size = (high - low) // count
    return low + index * size, low + (index + 1) * size


# Ports browsers refuse to open ("net::ERR_UNSAFE_PORT": Chromium's and Firefox's restricted ports) in the range
# free_port picks from (found in a CI run: a page test's server got 10080).
_BROWSERS_REFUSE = frozenset({10080})


def free_port() -> int:
    """A port free now, for a server a test starts in a moment, taken below the ephemeral range: a port the kernel
    handed out for port 0 may be given next to an outgoing connection of another test as its source port before
    our server binds it ("address already in use", seen in a CI run). Below the range only explicit binds compete:
    each test process picks at random from a part of the range of its own (two workers picking the same port, each
    finding it free before either server bound it, was the other "address already in use" seen in CI), and never
    hands the same port out twice."""
    low = _ephemeral_low()
    if low > 12_000:
        first, end = _share(10_000, low)
        for _ in range(200):
            port = random.randrange(first, end)
            if port in _handed_out or port in _BROWSERS_REFUSE:
                continue
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                _handed_out.add(port)
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A fresh workspace holding a copy of tests/notebooks."""
    folder = tmp_path / "workspace"
    shutil.copytree(NOTEBOOKS, folder)
    return folder


class ChildProcess:
    """The log, stop and kill of a process a test started (`process`, writing to `log_path`)."""

    process: subprocess.Popen[bytes] | None
    log_path: Path | None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Die like a crash: SIGKILL, no clean-up."""
        self.stop(signal.SIGKILL)


@dataclass
class ServerProcess(ChildProcess):
    """`nbrelay serve` in a subprocess; restartable on the same port, data dir and workspace."""

    workspace: Path
    data_dir: Path
    workers: int = 2
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60) -> ServerProcess:
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        env = {**os.environ, **self.env}
        command = [sys.executable, "-m", "nbrelay", "serve", "--port", str(self.port), "--no-examples"]
        command += ["--workspace", str(self.workspace), "--data-dir", str(self.data_dir)]
        command += ["--workers", str(self.workers)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited at start:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not answer within {timeout_s} s:\n{self.log()}")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def wait_for(self, job_id: int, *, states: Any = None, timeout_s: float = 60) -> dict[str, Any]:
        """Poll the job until it is in one of `states` (default: any finished state)."""
        wanted = set(states or ("succeeded", "failed", "cancelled", "timed_out"))
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = httpx.get(f"{self.url}/api/jobs/{job_id}", timeout=10).json()
            if job.get("state") in wanted:
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} not in {wanted} after {timeout_s} s: {job}")


@pytest.fixture
def server_factory(tmp_path: Path, workspace: Path) -> Iterator[Any]:
    started: list[ServerProcess] = []

    def make(**kw: Any) -> ServerProcess:
        server = ServerProcess(workspace=workspace, data_dir=tmp_path / "data", **kw)
        started.append(server)
        return server.start()

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Any) -> ServerProcess:
    return server_factory()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole test module (for tests that only read or add jobs)."""
    root = tmp_path_factory.mktemp("shared")
    folder = root / "workspace"
    shutil.copytree(NOTEBOOKS, folder)
    server = ServerProcess(workspace=folder, data_dir=root / "data").start()
    yield server
    server.stop()


def kernel_processes(env_tag: str | None = None) -> dict[int, int]:
    """{pid: parent pid} of live kernel processes (launched ones show ipykernel in their command line, forked
    ones are named nbrelay-kernel); with `env_tag`, only those whose environment has NBR_TEST_TAG=env_tag (not an
    NBRELAY_ name: kernels start without the service's own settings)."""
    found = {}
    needle = f"NBR_TEST_TAG={env_tag}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
            if env_tag is not None and needle not in (entry / "environ").read_bytes():
                continue
        except OSError:
            continue
        if (b"ipykernel" in cmdline or "(nbrelay-kernel)" in stat) and ") Z " not in stat:
            found[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return found


def kernel_pids() -> set[int]:
    return set(kernel_processes())


def unreachable(service: str, hint: str) -> NoReturn:
    """Fail (not skip) a test whose service does not answer: CI starts the services first, so their absence is
    a broken setup, never a reason to pass quietly."""
    __tracebackhide__ = True
    raise pytest.fail.Exception(f"not reachable: {service}\n{hint}", pytrace=False) from None


# The PostgreSQL of the test machine (scripts/test starts it); a test's tables live in a schema of their own.
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A store URL whose search_path is a fresh schema, dropped afterwards."""
    with fresh_postgres_url() as url:
        yield url


@contextmanager
def fresh_postgres_url() -> Iterator[str]:
    """As the postgres_url fixture, for a test that needs more than one database."""
    base = make_url(os.environ.get("NBRELAY_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL))
    libpq_url = base.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        admin = psycopg.connect(libpq_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        unreachable(
            f"PostgreSQL at {base.render_as_string(hide_password=True)}: {exc}",
            "Start it, or set NBRELAY_TEST_POSTGRES_URL, or deselect with -m 'not postgres'.",
        )
    schema = f"nbrelay_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


# The Redis of the test machine (scripts/test starts it). Tests never flush it: each one works under a key
# prefix of its own and deletes only the keys under it.
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
START_REDIS = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)


@contextmanager
def fresh_redis_url() -> Iterator[str]:
    """A broker URL (redis://…?prefix=…) whose keys and channels are the test's own; its keys go afterwards."""
    base = os.environ.get("NBRELAY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(base, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0))
    try:
        client.ping()
    except redis.RedisError as exc:
        unreachable(
            f"Redis at {base}: {exc}",
            f"Start it with:\n    {START_REDIS}\n(scripts/test does), or set NBRELAY_TEST_REDIS_URL, or deselect "
            "with -m 'not redis'.",
        )
    url = f"{base}?prefix=nbrelay-test-{secrets.token_hex(6)}"
    try:
        yield url
    finally:
        drop_redis_keys(url)
        client.close()


def drop_redis_keys(url: str) -> int:
    """Delete every key under the URL's prefix (what Redis restarted empty, or an eviction, does to them)."""
    base, _, prefix = url.partition("?prefix=")
    assert prefix.startswith("nbrelay-test-"), "only a test's own keys may be dropped"
    with redis.Redis.from_url(base) as client:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        return int(client.delete(*keys)) if keys else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """How pytest-xdist spreads the suite (scripts/test runs it with --dist loadgroup): a file whose tests share a
    module-scoped fixture (a server, a cluster) goes to one process, so that fixture starts once; the tests of any
    other file go wherever a process is free. One process running a whole file of independent slow tests (the
    executor contract: a deployment per test) kept the suite waiting on it after the other processes were done.
    Without xdist the order changes nothing that matters: every test sets up what it needs."""
    shared = {item.path for item in items if _uses_a_module_fixture(item)}
    for item in items:
        if item.path in shared:
            item.add_marker(pytest.mark.xdist_group(str(item.path)))
    # The processes take work in this order: the indivisible files first, the single tests after them to fill
    # the gaps, so that no process starts a file of several minutes when the others are nearly done.
    items.sort(key=lambda item: item.path not in shared)


def _uses_a_module_fixture(item: pytest.Item) -> bool:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(d.scope in ("module", "package") for defs in info.name2fixturedefs.values() for d in defs)
