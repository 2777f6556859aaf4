"""The chaos run at full size, for the figures of docs/reliability.md (tests/chaos runs it at CI size).

    .venv/bin/python bench/soak/run.py [--events 10000] [--clients 300] [--users 4] [--jobs 40] [--cluster]

While file changes and tiny jobs publish events to several users' streams, push clients (WebSocket, SSE, SockJS;
half of them through nginx with TLS) are cut at random and the server is stopped gracefully once and killed with
SIGKILL once, each time started again on the same data folder. With --cluster, the same on tests/cluster's
cluster (two web nodes on Redis and PostgreSQL behind nginx, two Celery workers): web node A is the one stopped
and killed while node B takes the changes and jobs. Prints the figures (events delivered, lost and
duplicated, jobs finished, 5xx answers, peak RSS of the server and its worker processes) and writes
bench/results/soak.json (soak-cluster.json).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the chaos harness lives with the tests

from tests.chaos.scenario import EventChaos, Size, make_tokens, server_env  # noqa: E402
from tests.cluster.conftest import Cluster, running_cluster  # noqa: E402
from tests.conftest import NOTEBOOKS, ServerProcess, kernel_processes  # noqa: E402
from tests.deploy.conftest import Certificate, Nginx  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "soak.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--cut-mean-s", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cluster", action="store_true", help="the multi-node mode (tests/cluster's cluster)")
    args = parser.parse_args()
    size = Size(
        events=args.events,
        clients=args.clients,
        users=args.users,
        jobs=args.jobs,
        publishers=8,
        cut_mean_s=args.cut_mean_s,
        restarts=("term", "kill"),
    )
    root = Path(tempfile.mkdtemp(prefix="nbrelay-soak-"))
    tag = uuid.uuid4().hex
    users = [f"user{k}" for k in range(size.users)]
    log = lambda line: print(line, flush=True)  # noqa: E731
    if args.cluster:
        # Two web nodes behind nginx on Redis and PostgreSQL, jobs on two Celery workers. Changes and jobs go to
        # node B; node A is the one stopped and killed, and the direct clients' node; nginx's clients are on both.
        tokens: dict[str, str] = {}

        def add_tokens(cluster: Cluster) -> None:
            tokens.update(make_tokens(root / "tokens", users, cluster.env["NBRELAY_DATABASE_URL"]))

        with running_cluster(root, server_env(size, tag), before_start=add_tokens) as cluster:
            tls = cluster.certificate.client_context()
            figures = EventChaos(cluster.b, cluster.nginx, tls, size, tokens, log, victim=cluster.a).run()
            tag, logs = cluster.tag, [node.log_path for node in cluster.nodes]
    else:
        workspace = root / "workspace"
        shutil.copytree(NOTEBOOKS, workspace)
        tokens = make_tokens(root / "data", users)
        server = ServerProcess(workspace, root / "data", workers=args.workers, env=server_env(size, tag))
        certificate = Certificate.make(root / "tls")
        nginx = Nginx(root / "nginx", certificate, server.port)
        try:
            server.start(timeout_s=300)
            nginx.start()
            figures = EventChaos(server, nginx, certificate.client_context(), size, tokens, log=log).run()
        finally:
            nginx.stop()
            server.stop()
        logs = [server.log_path]
    stray = kernel_processes(tag)
    result = json.loads(figures.to_json())
    result |= {"stray_kernels": len(stray), "when": datetime.now(UTC).isoformat(timespec="seconds")}
    result |= {"machine": f"{platform.machine()}, {platform.python_version()}", "cluster": args.cluster}
    print(json.dumps(result, indent=2, sort_keys=True))
    results = RESULTS.with_name("soak-cluster.json") if args.cluster else RESULTS
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2, sort_keys=True))
    for n, path in enumerate(logs):  # kept: what the servers said about any 5xx
        if path is not None and path.exists():
            node = f"-{'ab'[n]}" if len(logs) > 1 else ""
            shutil.copy(path, results.with_name(f"{results.stem}-server{node}.log"))
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    started = time.monotonic()
    main()
    print(f"soak done in {time.monotonic() - started:.0f} s")
