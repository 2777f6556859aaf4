"""Several machines on one: nginx in front of two web nodes, two Celery workers, PostgreSQL, Redis, a shared
workspace. Every browser sees every event of its jobs whichever node it is on and whichever worker runs the job;
no job is lost, run twice at once, or left running when a process dies (docs/deploy.md, "Several machines").

The tests share one cluster (tests/cluster/conftest.py); a test that kills a process starts it again.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from nbrelay.config import Settings
from tests.cluster.conftest import (
    LEASE_TIMEOUT_S,
    SLOTS,
    TERMINAL,
    Cluster,
    alive,
    assert_contiguous,
    kernel_pid,
)
from tests.push.transports.sockjs_client import V1, FrameStream, eventually, next_message, session_url

pytestmark = [pytest.mark.kernel, pytest.mark.postgres, pytest.mark.redis]

DEPLOY = Path(__file__).parents[2] / "deploy"


class Sampler:
    """Polls one job through the API every 20 ms, with whether its first attempt's kernel still lives."""

    def __init__(self, cluster: Cluster, job_id: int, first_kernel: int):
        self.cluster, self.job_id, self.first_kernel = cluster, job_id, first_kernel
        self.samples: list[tuple[str, int, bool]] = []  # (state, attempt, first kernel alive)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        with self.cluster.b.client() as http:
            while not self._done.is_set():
                self._sample(http)
                time.sleep(0.02)
            self._sample(http)  # the last one after the end was seen

    def _sample(self, http: httpx.Client) -> None:
        kernel_alive = alive(self.first_kernel)  # before the read: a kernel seen dead stays dead
        job = http.get(f"/api/jobs/{self.job_id}").json()
        self.samples.append((job["state"], job["attempt"], kernel_alive))

    def stop(self) -> list[tuple[str, int, bool]]:
        self._done.set()
        self._thread.join(10)
        return self.samples


def assert_one_attempt_at_a_time(samples: list[tuple[str, int, bool]], expected: list[tuple[str, int]]) -> None:
    """The (state, attempt) pairs seen follow `expected` in order, ending at its last; no attempt after the first
    ran while the first one's kernel lived."""
    steps = [(state, attempt) for state, attempt, _ in samples]
    collapsed = [step for i, step in enumerate(steps) if i == 0 or step != steps[i - 1]]
    assert all(step in expected for step in collapsed), collapsed
    assert collapsed == sorted(collapsed, key=expected.index) and collapsed[-1] == expected[-1], collapsed
    overlap = [s for s in samples if s[0] == "running" and s[1] > 1 and s[2]]
    assert not overlap, f"attempt 2 ran while attempt 1's kernel lived: {overlap[:3]}"


def test_sockjs_requests_of_one_session_reach_the_same_node(cluster: Cluster) -> None:
    """SockJS sessions live in one process: nginx routes /sockjs/… by the session id in the path. Many sessions
    at once through nginx, each a receiving xhr_streaming request and xhr_send posts: every post reaches the node
    holding its session (else it answers 404), and the sessions are spread over both nodes. With plain round
    robin each post would have one chance in two of the wrong node. Session ids are random: 24 of them all land on
    one node with probability 2 x 2^-24 (with 8, one run in 128 failed the spread check for no fault)."""
    sessions = 24
    with cluster.https() as http, ThreadPoolExecutor(sessions) as pool:
        opened = [http.stream("POST", session_url(SimpleNamespace(url=cluster.nginx.origin), V1)[0] + "/xhr_streaming")
                  for _ in range(sessions)]  # fmt: skip
        responses = [stream.__enter__() for stream in opened]
        try:
            streams = [FrameStream(response) for response in responses]
            for stream in streams:
                assert stream.read(2049) == "h" * 2048 + "\n" and stream.read_until("\n") == "o"
                read = lambda stream=stream: stream.read_until("\n")  # noqa: E731
                assert next_message(read, lambda m: m.get("op") == "snapshot")
            per_node = [cluster.connections(node) for node in cluster.nodes]
            assert sum(per_node) == sessions and min(per_node) > 0, per_node

            def talk(index: int) -> dict[str, object]:
                url = str(responses[index].request.url).removesuffix("/xhr_streaming")
                for _ in range(3):
                    sent = http.post(url + "/xhr_send", content=json.dumps(['{"op":"ping"}']))
                    assert sent.status_code == 204, (index, sent.status_code, sent.text)
                read = lambda: streams[index].read_until("\n")  # noqa: E731
                return dict(next_message(read, lambda m: m.get("op") == "pong"))

            assert list(pool.map(talk, range(sessions))) == [{"op": "pong"}] * sessions
        finally:
            for request in opened:
                request.__exit__(None, None, None)


def test_a_client_on_node_a_sees_live_progress_of_a_job_submitted_through_node_b(cluster: Cluster) -> None:
    """The WebSocket is on node A (nginx's server for A alone; A counts the connection, B does not); the job is
    submitted through node B and runs on a worker; A pushes each cell as it completes and serves the report."""
    tap = cluster.tap(cluster.front_a).follow_user()
    try:
        assert (cluster.connections(cluster.a), cluster.connections(cluster.b)) == (1, 0)
        job_id = cluster.submit("sleep.ipynb", node=cluster.b, seconds=2)
        stream = f"user:{tap.welcome['user']}"
        first = tap.until(lambda e: e["type"] == "job.progress" and e["data"]["job"] == job_id)
        live = cluster.job(job_id)  # read the moment the first cell's progress arrived
        assert live["state"] == "running" and live["worker"], live
        assert any(live["worker"].split(":")[-2] == str(w.pid) for w in cluster.workers), live["worker"]
        assert first["data"]["cell"] == 1
        end = tap.until(lambda e: e["type"] in TERMINAL and e["data"]["job"] == job_id)
        assert end["type"] == "job.succeeded", (end, cluster.logs())
        assert_contiguous(tap.events, stream)
        events = tap.of_job(job_id, stream)
        types = [e["type"] for e in events]
        assert types[:3] == ["job.queued", "job.starting", "job.started"] and types[-1] == "job.succeeded", types
        cells = [e["data"]["cell"] for e in events if e["type"] == "job.progress"]
        total = events[2]["data"]["total"]
        assert cells == list(range(1, total + 1)), (cells, total)
        with cluster.https(cluster.front_a) as http:
            report = http.get(end["data"]["report_url"])
        assert report.status_code == 200 and "text/html" in report.headers["content-type"]
        assert "start" in report.text
    finally:
        tap.close()


def test_node_a_killed_mid_job_the_client_resumes_on_node_b(cluster: Cluster) -> None:
    """Node A dies (SIGKILL) while a job runs; the client reconnects through nginx, which skips the dead node, to
    node B and resumes from its last id: recovered, then every event it missed and the rest, exactly once each."""
    tap = cluster.tap(cluster.front_a).follow_user()
    stream = f"user:{tap.welcome['user']}"
    try:
        job_id = cluster.submit("pid.ipynb", node=cluster.b, seconds=3)
        tap.kernel_of(job_id)
        cluster.a.kill()
        with pytest.raises(ConnectionClosed):  # nginx drops the tunnel of a dead upstream at once
            while True:
                tap.read(timeout_s=10)
        tap.connect(cluster.nginx)
        assert cluster.connections(cluster.b) == 1  # nginx took it to B: A is dead
        answer = tap.subscribe(stream, since=tap.last_id(stream))
        assert answer is not None and answer["recovered"] is True, answer
        end = tap.until(lambda e: e["type"] in TERMINAL and e["data"]["job"] == job_id)
        assert end["type"] == "job.succeeded", (end, cluster.logs())
        assert_contiguous(tap.events, stream)
        types = [e["type"] for e in tap.of_job(job_id, stream)]
        assert types[:3] == ["job.queued", "job.starting", "job.started"] and types[-1] == "job.succeeded", types
        assert types.count("job.succeeded") == 1 and "job.requeued" not in types, types
    finally:
        tap.close()
        cluster.revive()


@pytest.mark.parametrize("retries", [1, 0])
def test_a_worker_killed_mid_job(cluster: Cluster, retries: int) -> None:
    """The worker running a job dies (SIGKILL: its worker processes and the kernel go with it). Within the lease
    timeout a web node's reaper acts: with NBRELAY_LOST_JOB_RETRIES=1 it re-queues the job as attempt 2 and the
    other worker runs it to the end; with 0 the job fails "worker lost", once, and nothing runs it again. Polled
    from the API all along: one attempt at a time, and never a second one while the first one's kernel lives."""
    cluster.lost_job_retries(retries)
    tap = cluster.tap().follow_user()
    stream = f"user:{tap.welcome['user']}"
    try:
        job_id = cluster.submit("pid.ipynb", seconds=2 if retries else 60)
        first_kernel = tap.kernel_of(job_id)
        doomed = cluster.worker_running(job_id)
        survivor = next(w for w in cluster.workers if w is not doomed)
        samples = Sampler(cluster, job_id, first_kernel).start()
        killed_at = time.monotonic()
        doomed.kill()
        acted = tap.until(lambda e: e["type"] in TERMINAL | {"job.requeued"} and e["data"]["job"] == job_id)
        acted_after_s = time.monotonic() - killed_at
        if acted["type"] in TERMINAL:
            end = acted
        else:
            end = tap.until(lambda e: e["type"] in TERMINAL and e["data"]["job"] == job_id, timeout_s=90)
        if not retries:
            time.sleep(LEASE_TIMEOUT_S)  # long enough for a wrong second attempt, or a second end, to show
        seen = samples.stop()
        # About the lease timeout, and a loaded machine stretches it (6.0 s was seen with the cores shared four
        # ways): the bound only says the reaper acted on the lease, not on some later sweep.
        assert acted_after_s <= LEASE_TIMEOUT_S + 20, acted_after_s
        events = tap.of_job(job_id, stream)
        types = [e["type"] for e in events]
        done = cluster.job(job_id)
        if retries:
            assert acted["type"] == "job.requeued" and acted["data"]["attempt"] == 2, acted
            assert acted["data"]["reason"].startswith("worker lost"), acted
            assert end["type"] == "job.succeeded", (end, cluster.logs())
            assert done["attempt"] == 2 and done["worker"].split(":")[-2] == str(survivor.pid), done
            assert types.count("job.requeued") == 1 and types.count("job.started") == 2, types
            assert types.index("job.requeued") < len(types) - 1 - types[::-1].index("job.started"), types
            assert [e["data"].get("attempt", 1) for e in events if e["type"] == "job.started"] == [1, 2]
            assert_one_attempt_at_a_time(seen, [("running", 1), ("queued", 2), ("running", 2), ("succeeded", 2)])
            kernels = [pid for pid in map(kernel_pid, events) if pid is not None]
            assert len(set(kernels)) == 2, kernels  # the second attempt ran in a kernel of its own
        else:
            assert end["type"] == "job.failed", (end, cluster.logs())
            assert end["data"]["error"]["reason"].startswith("worker lost"), end
            assert done["state"] == "failed" and done["attempt"] == 1, done
            assert done["error"]["reason"].startswith("worker lost"), done
            assert "job.requeued" not in types and types.count("job.started") == 1, types
            assert_one_attempt_at_a_time(seen, [("running", 1), ("failed", 1)])
            kernels = [first_kernel]
        assert [t for t in types if t in TERMINAL] == [end["type"]], types
        assert_contiguous(tap.events, stream)
        eventually(lambda: not any(map(alive, kernels)) and not cluster.stray_kernels(), "no kernel left", 10)
    finally:
        tap.close()
        cluster.revive()


def test_cancel_of_a_job_running_on_a_worker(cluster: Cluster) -> None:
    """A cancel through one node reaches the worker (a broadcast, and its next lease renewal) and ends the run
    cancelled within 5 s; the job's kernel is gone."""
    tap = cluster.tap().follow_user()
    stream = f"user:{tap.welcome['user']}"
    try:
        job_id = cluster.submit("pid.ipynb", node=cluster.a, seconds=120)
        kernel = tap.kernel_of(job_id)
        assert kernel is not None and alive(kernel)
        asked_at = time.monotonic()
        with cluster.b.client() as http:
            assert http.post(f"/api/jobs/{job_id}/cancel").status_code == 202
        end = tap.until(lambda e: e["type"] in TERMINAL and e["data"]["job"] == job_id, timeout_s=30)
        assert end["type"] == "job.cancelled", end
        assert cluster.wait_for(job_id, timeout_s=5)["state"] == "cancelled"
        eventually(lambda: not alive(kernel), "the job's kernel to end", 10)
        assert time.monotonic() - asked_at <= 5, "the cancel took longer than 5 s"
        assert not cluster.stray_kernels()
        assert [e["type"] for e in tap.of_job(job_id, stream)].count("job.cancelled") == 1
    finally:
        tap.close()


def test_a_worker_stopped_with_sigterm_ends_its_runs_then_exits(cluster: Cluster) -> None:
    """What `systemctl stop nbrelay-worker` does (SIGTERM to the main process, KillMode=mixed): the worker takes
    no more jobs, ends its run "interrupted: worker stopped" with the partial report, and exits well inside the
    unit's TimeoutStopSec, leaving no kernel; the job is not re-queued."""
    unit = (DEPLOY / "nbrelay-worker.service").read_text()
    stop_timeout_s = float(re.findall(r"^TimeoutStopSec=(\d+)s$", unit, re.M)[0])
    tap = cluster.tap().follow_user()
    stream = f"user:{tap.welcome['user']}"
    try:
        job_id = cluster.submit("pid.ipynb", seconds=120)
        kernel = tap.kernel_of(job_id)
        worker = cluster.worker_running(job_id)
        assert worker.process is not None
        asked_at = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        end = tap.until(lambda e: e["type"] in TERMINAL and e["data"]["job"] == job_id)
        worker.process.wait(timeout=stop_timeout_s)
        assert time.monotonic() - asked_at < stop_timeout_s / 2, "the stop took half the unit's TimeoutStopSec"
        assert end["type"] == "job.failed" and end["data"]["error"]["reason"] == "interrupted: worker stopped", end
        assert end["data"]["report_url"], end
        with cluster.a.client() as http:
            report = http.get(end["data"]["report_url"])
        assert report.status_code == 200 and f"kernel {kernel}" in report.text
        eventually(lambda: not alive(kernel) and not cluster.stray_kernels(), "no kernel left", 10)
        # No reaper acts on it (its lease ended with the run): whatever the retries, no "worker lost", no re-queue.
        time.sleep(LEASE_TIMEOUT_S)
        types = [e["type"] for e in tap.of_job(job_id, stream)]
        assert "job.requeued" not in types and [t for t in types if t in TERMINAL] == ["job.failed"], types
        assert cluster.job(job_id)["attempt"] == 1
    finally:
        tap.close()
        cluster.revive()


def test_200_jobs_through_both_nodes_run_exactly_once_never_more_than_the_slots(cluster: Cluster) -> None:
    """200 tiny jobs, half through each web node, on 2 workers x 2 slots: each succeeds once, as attempt 1, with
    one terminal event on its own stream and on the user's; never more than 4 running at a time (polled)."""
    jobs, slots = 200, SLOTS * len(cluster.workers)
    tap = cluster.tap().follow_user()
    stream = f"user:{tap.welcome['user']}"
    ids: list[int] = []
    ends: dict[int, int] = {}
    reader_failed: list[BaseException] = []

    def read_to_the_end() -> None:  # the tap's one reader: its queue must not fill while jobs run
        try:
            while len([i for i in ids if i in ends]) < jobs or len(ids) < jobs:
                message = tap.read(timeout_s=120)
                if message.get("op") == "event" and message["type"] in TERMINAL:
                    ends[message["data"]["job"]] = ends.get(message["data"]["job"], 0) + 1
        except BaseException as exc:  # reported below
            reader_failed.append(exc)

    def submit_half(node_index: int) -> list[int]:
        node = cluster.nodes[node_index]
        with node.client() as http:
            answers = [http.post("/api/jobs", json={"notebook": "tiny.ipynb"}) for _ in range(jobs // 2)]
        assert all(a.status_code == 202 for a in answers), [a.text for a in answers if a.status_code != 202][:3]
        return [int(a.json()["id"]) for a in answers]

    reader = threading.Thread(target=read_to_the_end, name="tap-reader", daemon=True)
    most_running = 0
    try:
        with ThreadPoolExecutor(2) as pool, cluster.a.client() as http:
            halves = pool.map(submit_half, (0, 1))
            submitting = threading.Thread(target=lambda: ids.extend(i for half in halves for i in half))
            submitting.start()
            reader.start()
            deadline = time.monotonic() + 180
            while reader.is_alive() and time.monotonic() < deadline:
                most_running = max(most_running, len(cluster.running(http)))
                time.sleep(0.02)
            submitting.join(10)
        reader.join(5)
        assert not reader_failed and not reader.is_alive(), (reader_failed, len(ends), cluster.logs()[-3000:])
        assert most_running == slots, most_running  # the cap held, and all the slots were used
        assert sorted(ids) == sorted(set(ids)) and len(ids) == jobs
        with cluster.b.client() as http:
            listed = http.get("/api/jobs", params={"limit": 500}).json()["jobs"]
        found = {job["id"]: job for job in listed if job["id"] in set(ids)}
        assert len(found) == jobs
        assert {(job["state"], job["attempt"]) for job in found.values()} == {("succeeded", 1)}
        assert {ends.get(i) for i in ids} == {1}, {i: ends.get(i) for i in ids if ends.get(i) != 1}
        assert_contiguous(tap.events, stream)
        for job_id, history in zip(ids, cluster.histories([f"job:{i}" for i in ids]).values(), strict=True):
            types = [e["type"] for e in history]
            assert types[0] == "job.queued" and types.count("job.succeeded") == 1, (job_id, types)
            assert not set(types) & (TERMINAL - {"job.succeeded"}) and "job.requeued" not in types, (job_id, types)
            assert [e["offset"] for e in history] == list(range(1, len(history) + 1)), (job_id, history)
    finally:
        tap.close()


def test_redis_emptied_mid_stream_clients_learn_recovered_false_and_nothing_crashes(cluster: Cluster) -> None:
    """Redis restarted empty while a client follows a running job. A real restart would hit every other user of
    this machine's shared Redis, so the test deletes every key under its own prefix instead: the same loss for
    this cluster (event history, stream epochs, Celery's queue). The live client is told recovered: false on the
    next event and re-reads the job over REST; a client resuming from before the loss is told the same; both
    web nodes and both workers stay up, the job finishes, and a new job runs."""
    tap = cluster.tap().follow_user()
    stream = f"user:{tap.welcome['user']}"
    try:
        job_id = cluster.submit("pid.ipynb", seconds=3)
        tap.kernel_of(job_id)
        before = tap.last_id(stream)
        cluster.empty_redis()
        end = tap.until(lambda e: e["type"] in TERMINAL and e["data"]["job"] == job_id, timeout_s=60)
        answers = [a for a in tap.answers if a["stream"] == stream and a["recovered"] is False]
        assert answers, tap.answers
        reread = cluster.job(job_id)  # what the client does on recovered: false
        assert reread["state"] in ("running", "succeeded"), reread
        assert end["type"] == "job.succeeded" and cluster.job(job_id)["state"] == "succeeded", end
        old_epoch = before.rpartition(":")[0]
        assert end["epoch"] != old_epoch and answers[0]["position"].rpartition(":")[0] != old_epoch
        assert_contiguous([e for e in tap.events if e["epoch"] == old_epoch], stream)
        assert_contiguous([e for e in tap.events if e["epoch"] == end["epoch"]], stream)

        late = cluster.tap()
        try:
            answer = late.subscribe(stream, since=before)
            assert answer is not None and answer["recovered"] is False, answer
        finally:
            late.close()
        for node in cluster.nodes:
            assert node.process is not None and node.process.poll() is None, node.log()
            assert httpx.get(f"{node.url}/api/health", timeout=10).status_code == 200
        assert all(w.process is not None and w.process.poll() is None for w in cluster.workers), cluster.logs()
        after = cluster.submit("tiny.ipynb", node=cluster.b)
        assert cluster.wait_for(after, timeout_s=30)["state"] == "succeeded", cluster.logs()[-3000:]
    finally:
        tap.close()


def test_the_env_example_names_real_settings() -> None:
    """Every NBRELAY_ name in deploy/nbrelay.env.example is a setting (a typo there would be silently ignored), and
    those that must agree across nodes are all in the part that is copied unchanged."""
    text = (DEPLOY / "nbrelay.env.example").read_text()
    named = set(re.findall(r"^#?(NBRELAY_[A-Z0-9_]+)=", text, re.M))
    known = {f"NBRELAY_{name.upper()}" for name in Settings.model_fields} | {"NBRELAY_REPORTS_DIR"}
    assert named <= known, named - known
    shared = text.split("# --- Per machine")[0]
    for name in ("EXECUTOR", "DATABASE_URL", "BROKER_URL", "CELERY_BROKER_URL", "SECRET_KEY", "WORKSPACE",
                 "REPORTS_DIR", "LEASE_TIMEOUT_S", "LOST_JOB_RETRIES"):  # fmt: skip
        assert f"NBRELAY_{name}=" in shared, name


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    """systemd reads the shipped units without a complaint (an unknown or misspelt key is only a warning to
    systemd, and a silently ignored hardening or kill setting is the mistake to catch)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    for unit in ("nbrelay-serve.service", "nbrelay-worker.service"):
        text = (DEPLOY / unit).read_text()
        assert "ExecStart=/opt/nbrelay/bin/nbrelay " in text and "KillMode=mixed" in text, unit
        here = str(Path(sys.executable).parent / "nbrelay")  # ExecStart must exist for verify
        (tmp_path / unit).write_text(text.replace("/opt/nbrelay/bin/nbrelay", here))
    checked = subprocess.run([analyze, "verify", *map(str, tmp_path.iterdir())], capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), checked
