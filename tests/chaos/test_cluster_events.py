"""The event chaos of test_events.py in the multi-node mode: two web nodes on Redis and PostgreSQL behind nginx,
jobs on two Celery workers (tests/cluster's cluster). Node B takes the changes and jobs; node A, which the direct
clients use and nginx sends part of its clients to, is stopped gracefully once and killed with SIGKILL once. Every
client, whichever node it lands on, ends with every event of its streams exactly once, in order."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

from tests.chaos.scenario import CI, EventChaos, check, make_tokens, server_env
from tests.cluster.conftest import Cluster, running_cluster


def test_every_client_gets_every_event_once_in_order_on_any_node_through_cuts_and_node_restarts(
    tmp_path: Path,
) -> None:
    size = replace(CI, restarts=("term", "kill"))
    users = [f"user{k}" for k in range(size.users)]
    tokens: dict[str, str] = {}

    def add_tokens(cluster: Cluster) -> None:
        tokens.update(make_tokens(tmp_path / "tokens", users, cluster.env["NBRELAY_DATABASE_URL"]))

    with running_cluster(tmp_path / "cluster", server_env(size, uuid.uuid4().hex), before_start=add_tokens) as cluster:
        tls = cluster.certificate.client_context()
        figures = EventChaos(cluster.b, cluster.nginx, tls, size, tokens, log=print, victim=cluster.a).run()
        check(figures, size, cluster.logs())
        assert not cluster.stray_kernels(), "a kernel outlived its run"
