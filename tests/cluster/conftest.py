"""A cluster on one machine, set up as docs/deploy.md ("Several machines") says: real nginx (deploy/nginx.conf with
both web nodes in its upstreams) in front of two `nbrelay serve` nodes and two `nbrelay worker` processes, each with
a data folder of its own, on a fresh PostgreSQL schema and a Redis key prefix of their own, sharing one workspace
and one reports folder. One cluster per test module; tests that kill a process start it again."""

from __future__ import annotations

import json
import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nbformat
import pytest
from prometheus_client.parser import text_string_to_metric_families

from nbrelay.client import _PushSocket
from tests.conftest import (
    NOTEBOOKS,
    ServerProcess,
    drop_redis_keys,
    fresh_postgres_url,
    fresh_redis_url,
    kernel_processes,
)
from tests.deploy.conftest import Certificate, Nginx, render
from tests.executor.conftest import WorkerProcess
from tests.push.transports.sockjs_client import eventually

LEASE_TIMEOUT_S = 3.0
SLOTS = 2  # per worker
KEEPALIVE_S = 20.0  # a tap that waits pings this often (the server's client timeout is 60 s)
TERMINAL = {"job.succeeded", "job.failed", "job.cancelled", "job.timed_out"}
FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}
HISTORY_BATCH = 12


@dataclass
class ClusterNginx(Nginx):
    """The tests/deploy harness with several web nodes: each of them on a `server` line of both upstreams."""

    upstream_ports: list[int] = field(default_factory=list)

    def site(self) -> str:
        servers = " ".join(f"server 127.0.0.1:{port};" for port in self.upstream_ports)
        text = render(super().site(), {f"server 127.0.0.1:{self.upstream_port};": servers})
        assert text.count(servers) == 2, "deploy/nginx.conf should list the web nodes in two upstreams"
        return text


def kernel_notebook(path: Path) -> None:
    """pid.ipynb: prints its kernel's pid (so a test knows which process is the job's), sleeps, prints done."""
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("seconds: float = 30.0")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [
        parameters,
        nbformat.v4.new_code_cell('import os, time\nprint(f"kernel {os.getpid()}", flush=True)'),
        nbformat.v4.new_code_cell("time.sleep(seconds)"),
        nbformat.v4.new_code_cell('print("done")'),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)


def kernel_pid(event: dict[str, Any]) -> int | None:
    """The pid a pid.ipynb job printed, from its job.output event."""
    text = event["data"].get("text", "") if event.get("type") == "job.output" else ""
    for line in text.splitlines():
        if line.startswith("kernel "):
            return int(line.split()[1])
    return None


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return ") Z " not in stat


def parent_of(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


class Tap:
    """A /ws client that keeps every message as it came, across reconnects: no de-duplication and no hiding of
    `recovered` answers, so a duplicate, a gap or a lost epoch shows in `events` and `answers`."""

    def __init__(self, cluster: Cluster, nginx: Nginx):
        self.cluster = cluster
        self.events: list[dict[str, Any]] = []
        self.answers: list[dict[str, Any]] = []  # every {"op": "recovered", …}
        self.socket: _PushSocket | None = None
        self.welcome: dict[str, Any] = {}
        self.last_sent = time.monotonic()
        self.connect(nginx)

    def connect(self, nginx: Nginx) -> Tap:
        self.close()
        self.socket = _PushSocket(f"{nginx.wss}/ws", self.cluster.certificate.client_context()).__enter__()
        self.welcome = self.read()
        assert self.welcome["op"] == "welcome", self.welcome
        assert self.read()["op"] == "snapshot"
        return self

    def close(self) -> None:
        if self.socket is not None:
            self.socket.__exit__(None, None, None)
            self.socket = None

    def read(self, timeout_s: float = 60) -> dict[str, Any]:
        """The next message; while none comes, a ping every KEEPALIVE_S, as a client must (the server closes a
        connection silent for 60 s with 4012: a long wait under load would otherwise lose the tap)."""
        assert self.socket is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() - self.last_sent > KEEPALIVE_S:
                self.send({"op": "ping"})
            try:
                raw = self.socket.recv(timeout=max(0.0, min(deadline - time.monotonic(), KEEPALIVE_S)))
                break
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise
        message: dict[str, Any] = json.loads(raw)
        if message.get("op") == "event":
            self.events.append(message)
        elif message.get("op") == "recovered":
            self.answers.append(message)
        return message

    def subscribe(self, stream: str, since: str | None = None) -> dict[str, Any] | None:
        """Subscribe (resuming from `since`); returns the `recovered` answer, if any, once the pong after it says
        the subscription is in place (events read meanwhile are kept)."""
        first = len(self.answers)
        self.send({"op": "subscribe", "stream": stream} | ({"since": since} if since else {}))
        self.send({"op": "ping"})
        while (message := self.read())["op"] != "pong":
            assert message["op"] != "error", message
        return next((a for a in self.answers[first:] if a["stream"] == stream), None)

    def follow_user(self) -> Tap:
        """Subscribe to the user's stream from where it stood at connect (every event after that arrives)."""
        stream = f"user:{self.welcome['user']}"
        answer = self.subscribe(stream, since=self.welcome["streams"][stream])
        assert answer is not None and answer["recovered"] is True, answer
        return self

    def histories(self, streams: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every event the hub holds of each stream, from its first: a resume from another epoch answers the
        current one (recovered false); a resume from that epoch's offset 0 then brings the whole history. At most
        HISTORY_BATCH streams: their 3 messages each stay inside a connection's burst allowance (4013 beyond)."""
        assert len(streams) <= HISTORY_BATCH
        epochs = {}
        for stream in streams:
            self.send({"op": "subscribe", "stream": stream, "since": "not-this-epoch:0"})
        for answer in self.answered(streams):
            assert answer["recovered"] is False, answer
            epochs[answer["stream"]] = answer["position"].rpartition(":")[0]
            self.send({"op": "unsubscribe", "stream": answer["stream"]})
        start = len(self.events)
        for stream in streams:
            self.send({"op": "subscribe", "stream": stream, "since": f"{epochs[stream]}:0"})
        for answer in self.answered(streams):
            assert answer["recovered"] is True, answer
        return {stream: [e for e in self.events[start:] if e["stream"] == stream] for stream in streams}

    def answered(self, streams: list[str]) -> list[dict[str, Any]]:
        """The `recovered` answers to the subscribes just sent, once the pong after them came."""
        first = len(self.answers)
        self.send({"op": "ping"})
        while (message := self.read())["op"] != "pong":
            assert message["op"] != "error", message
        answers = [a for a in self.answers[first:] if a["stream"] in streams]
        assert sorted(a["stream"] for a in answers) == sorted(streams), answers
        return answers

    def send(self, message: dict[str, Any]) -> None:
        assert self.socket is not None
        self.socket.send(json.dumps(message))
        self.last_sent = time.monotonic()

    def last_id(self, stream: str) -> str:
        return str([e for e in self.events if e["stream"] == stream][-1]["id"])

    def until(self, wanted: Callable[[dict[str, Any]], bool], timeout_s: float = 60) -> dict[str, Any]:
        """Read until an event `wanted` accepts (earlier events are kept) and return it."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no such event within {timeout_s} s; last events: {self.events[-5:]}")
            message = self.read(timeout_s=left)
            if message.get("op") == "event" and wanted(message):
                return message

    def kernel_of(self, job_id: int) -> int:
        """The pid of a running pid.ipynb job's kernel, from the output it printed."""
        pid = kernel_pid(self.until(lambda e: kernel_pid(e) is not None and e["data"]["job"] == job_id))
        assert pid is not None
        return pid

    def of_job(self, job_id: int, stream: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["data"].get("job") == job_id and (stream is None or e["stream"] == stream)]


def assert_contiguous(events: list[dict[str, Any]], stream: str) -> list[int]:
    """The stream's events are one epoch and offsets n, n+1, n+2, …: none twice, none missing, in order."""
    mine = [e for e in events if e["stream"] == stream]
    assert mine, f"no events on {stream}"
    assert {e["epoch"] for e in mine} == {mine[0]["epoch"]}, [e["id"] for e in mine]
    offsets = [int(e["offset"]) for e in mine]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), offsets
    return offsets


@dataclass
class Cluster:
    root: Path
    workspace: Path
    certificate: Certificate
    broker_url: str  # redis://…?prefix=…: every Redis key of this cluster is under that prefix
    tag: str  # NBR_TEST_TAG of its processes (kernel_processes)
    env: dict[str, str]
    nodes: list[ServerProcess]  # web node A, web node B
    workers: list[WorkerProcess]
    front: ClusterNginx | None = None  # both web nodes
    front_a: Nginx | None = None  # node A only: a client that must be on A connects here

    @property
    def a(self) -> ServerProcess:
        return self.nodes[0]

    @property
    def b(self) -> ServerProcess:
        return self.nodes[1]

    @property
    def nginx(self) -> ClusterNginx:
        assert self.front is not None
        return self.front

    def tap(self, nginx: Nginx | None = None) -> Tap:
        return Tap(self, nginx or self.nginx)

    def histories(self, streams: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Tap.histories of any number of streams, a fresh connection per batch."""
        found: dict[str, list[dict[str, Any]]] = {}
        for first in range(0, len(streams), HISTORY_BATCH):
            tap = self.tap()
            try:
                found |= tap.histories(streams[first : first + HISTORY_BATCH])
            finally:
                tap.close()
        return found

    def https(self, nginx: Nginx | None = None) -> httpx.Client:
        return httpx.Client(base_url=(nginx or self.nginx).origin, verify=self.certificate.client_context(), timeout=30)

    # jobs, through a given web node ------------------------------------------------------------------------------
    def live_node(self) -> ServerProcess:
        return next(n for n in self.nodes if n.process is not None and n.process.poll() is None)

    def submit(self, notebook: str, node: ServerProcess | None = None, **parameters: Any) -> int:
        with (node or self.live_node()).client() as http:
            answer = http.post("/api/jobs", json={"notebook": notebook, "parameters": parameters})
        assert answer.status_code == 202, answer.text
        return int(answer.json()["id"])

    def job(self, job_id: int) -> dict[str, Any]:
        with self.live_node().client() as http:
            return dict(http.get(f"/api/jobs/{job_id}").json())

    def running(self, http: httpx.Client) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = http.get("/api/jobs", params={"state": "running", "limit": 500}).json()["jobs"]
        return jobs

    def wait_for(self, job_id: int, states: set[str] = FINISHED, timeout_s: float = 60) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["state"] in states else None

        return dict(eventually(finished, f"job {job_id} in {states}", timeout_s))

    def worker_running(self, job_id: int) -> WorkerProcess:
        """The `nbrelay worker` whose id (node:pid:…) holds the job's lease."""
        worker_id = self.wait_for(job_id, {"running"})["worker"]
        pid = int(worker_id.split(":")[-2])
        return next(w for w in self.workers if w.process is not None and w.process.pid == pid)

    # processes ----------------------------------------------------------------------------------------------------
    def metric(self, node: ServerProcess, name: str, **labels: str) -> float:
        text = httpx.get(f"{node.url}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return 0.0

    def connections(self, node: ServerProcess) -> int:
        return int(self.metric(node, "nbrelay_connections", transport="ws"))

    def stray_kernels(self) -> set[int]:
        """Kernels of this cluster that no live node or worker of it owns (a worker's warm spares are owned)."""
        processes = [n.process for n in self.nodes] + [w.process for w in self.workers]
        owners = {p.pid for p in processes if p is not None and p.poll() is None}
        stray = set()
        for pid in kernel_processes(self.tag):
            ancestor = pid
            while ancestor > 1 and ancestor not in owners:
                ancestor = parent_of(ancestor)
            if ancestor not in owners:
                stray.add(pid)
        return stray

    def empty_redis(self) -> None:
        """Delete every key of this cluster: what Redis restarted without persistence does to them."""
        # The nodes and workers write again at once, as they would after a restart.
        assert drop_redis_keys(self.broker_url) > 0, "nothing to lose"

    def revive(self) -> None:
        """Start again the nodes and workers a test killed (a worker's old log moves aside: start() waits for a
        fresh "ready.")."""
        for node in self.nodes:
            if node.process is not None and node.process.poll() is not None:
                node.start()
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is not None:
                if worker.log_path is not None and worker.log_path.exists():
                    worker.log_path.rename(worker.log_path.with_name(f"worker-{int(time.time() * 1000)}.log"))
                worker.start()

    def restart_node(self, node: ServerProcess, **env: str) -> None:
        node.stop()
        node.env.update(env)
        node.start()

    def lost_job_retries(self, retries: int) -> None:
        """Set NBRELAY_LOST_JOB_RETRIES on the web nodes (their reapers apply it), restarting them if it changes."""
        for node in self.nodes:
            if node.env.get("NBRELAY_LOST_JOB_RETRIES") != str(retries):
                self.restart_node(node, NBRELAY_LOST_JOB_RETRIES=str(retries))

    def logs(self) -> str:
        parts = [f"--- node {n.port}\n{n.log()}" for n in self.nodes]
        parts += [f"--- {w.data_dir.name}\n{w.log()}" for w in self.workers]
        return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@contextmanager
def running_cluster(
    root: Path, settings: dict[str, str] | None = None, before_start: Callable[[Cluster], None] = lambda c: None
) -> Iterator[Cluster]:
    """The cluster in `root`, its processes with `settings` on top of the cluster's own; `before_start` runs once
    its database and Redis prefix exist, before any process starts (bench/soak/run.py --cluster adds tokens)."""
    workspace = root / "workspace"
    shutil.copytree(NOTEBOOKS, workspace)
    kernel_notebook(workspace / "pid.ipynb")
    tag = uuid.uuid4().hex
    (root / "reports").mkdir(exist_ok=True)  # shared folders exist before a worker starts (it refuses else)
    with ExitStack() as stack:
        broker_url = stack.enter_context(fresh_redis_url())
        env = {
            "NBRELAY_EXECUTOR": "celery",
            "NBRELAY_DATABASE_URL": stack.enter_context(fresh_postgres_url()),
            "NBRELAY_BROKER_URL": broker_url,
            "NBRELAY_SECRET_KEY": secrets.token_hex(16),
            "NBRELAY_REPORTS_DIR": str(root / "reports"),
            "NBRELAY_LEASE_TIMEOUT_S": str(LEASE_TIMEOUT_S),
            "NBRELAY_LOST_JOB_RETRIES": "1",
            "NBRELAY_INTERRUPT_GRACE_S": "1",
            "NBRELAY_TRUSTED_PROXIES": "127.0.0.1",
            "NBR_TEST_TAG": tag,
            **(settings or {}),
        }
        tag = env["NBR_TEST_TAG"]  # the caller's, when its settings name one
        nodes = [ServerProcess(workspace, root / f"web-{name}", workers=1, env=dict(env)) for name in "ab"]
        workers = [WorkerProcess(workspace, root / f"worker-{i}", env=dict(env), slots=SLOTS) for i in (1, 2)]
        for node in nodes:
            stack.callback(node.stop)
        for worker in workers:
            stack.callback(worker.stop)
        cluster = Cluster(root, workspace, Certificate.make(root / "tls"), broker_url, tag, env, nodes, workers)
        before_start(cluster)
        # Node A first: it creates the schema; the others start together.
        nodes[0].start()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda p: p.start(), [nodes[1], *workers]))
        ports = [node.port for node in nodes]
        cluster.front = ClusterNginx(root / "nginx", cluster.certificate, ports[0], upstream_ports=ports)
        cluster.front_a = Nginx(root / "nginx-a", cluster.certificate, ports[0])
        for nginx in (cluster.front, cluster.front_a):
            stack.callback(nginx.stop)
            nginx.start()
        yield cluster
