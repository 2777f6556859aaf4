"""The event chaos run, at any size: while file changes and jobs publish events to several users' streams, push
clients of every transport (directly and through nginx with TLS) are cut at random, and the server is restarted
mid-stream on the same data folder. At the end each client's events are compared with the streams' history.

tests/chaos/test_events.py runs it at CI size; bench/soak/run.py at full size, for the figures of
docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from websockets.asyncio.client import connect

from nbrelay.auth import hash_token, new_token
from nbrelay.store import open_store
from tests.chaos.clients import CLIENTS, Chaos, Ledger, split_position
from tests.conftest import NOTEBOOKS, ServerProcess
from tests.deploy.conftest import Nginx

FINISHED = {"succeeded", "failed", "cancelled", "timed_out"}
History = dict[str, dict[int, dict[str, Any]]]  # stream -> offset -> event
TERMINAL = {"job.succeeded", "job.failed", "job.cancelled", "job.timed_out"}


@dataclass
class Size:
    events: int  # file changes published (the jobs' events come on top)
    clients: int  # spread over the transports (ws, sse, sockjs), direct and through nginx, and the users
    users: int
    jobs: int  # tiny notebooks submitted while the events flow
    publishers: int = 4  # concurrent writers
    cut_mean_s: float = 2.0  # mean time between two cuts of one client
    restarts: tuple[str, ...] = ("kill",)  # "kill": SIGKILL; "term": a graceful stop (4001 to clients)


CI = Size(events=1000, clients=30, users=2, jobs=6)


def server_env(size: Size, tag: str) -> dict[str, str]:
    return {
        "NBRELAY_AUTH_MODE": "token",
        # History holds every event of the run, so the check can read each stream whole at the end; clients resume
        # from wherever they were as they would with the default (1,000), since none falls that far behind.
        "NBRELAY_HISTORY_SIZE": str(10 * (size.events + 100 * size.jobs)),
        "NBRELAY_TRUSTED_PROXIES": "127.0.0.1",
        "NBRELAY_KERNEL_POOL_SIZE": "0",
        "NBRELAY_MAX_CONNECTIONS_PER_USER": str(max(200, 4 * size.clients // size.users)),
        "NBR_TEST_TAG": tag,
    }


def make_tokens(data_dir: Path, users: list[str], database_url: str | None = None) -> dict[str, str]:
    """A token per user, stored as `nbrelay token create` does (before the server starts), in the data folder's
    database or in `database_url`'s."""
    tokens = {user: new_token() for user in users}

    async def store_them() -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        store = open_store(database_url or f"sqlite:///{data_dir / 'nbrelay.db'}")
        await store.start()
        try:
            for user, token in tokens.items():
                await store.add_token(user, hash_token(token), admin=False)
        finally:
            await store.close()

    asyncio.run(store_them())
    return tokens


class MemoryPeak:
    """The largest RSS seen of the server and its worker processes (kernels not counted), sampled in a thread."""

    def __init__(self, server: ServerProcess, period_s: float = 0.5):
        self.server, self.period_s = server, period_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-peak", daemon=True)

    def __enter__(self) -> MemoryPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            with contextlib.suppress(Exception):
                self.peak_bytes = max(self.peak_bytes, server_rss(self.server))


def server_rss(server: ServerProcess) -> int:
    if server.process is None or server.process.poll() is not None:
        return 0
    root = psutil.Process(server.process.pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            if process.name() != "nbrelay-kernel" and "ipykernel" not in " ".join(process.cmdline()):
                total += process.memory_info().rss
    return total


@dataclass
class Figures:
    size: dict[str, Any]
    duration_s: float = 0.0
    restart_s: list[float] = field(default_factory=list)
    published: int = 0  # file changes acknowledged
    jobs: Counter[str] = field(default_factory=Counter)  # final states
    stream_events: int = 0  # events in all streams during the run (file changes and jobs)
    expected: int = 0  # deliveries owed: each client, each event of its streams since it first connected
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0  # kept twice (after the protocol's dedupe by offset): must be 0
    resent: int = 0  # arrived again and dropped by offset, as the protocol tells clients to
    coalesced_progress: int = 0  # job.progress replaced by a newer one in a full queue (allowed by the protocol)
    mismatched: int = 0  # an id whose type or data differ from the history's
    unrecovered: int = 0  # resumes answered recovered: false
    not_caught_up: int = 0  # clients that did not reach the end of their streams
    unannounced: int = 0  # acknowledged file changes with no event in the history
    unannounced_paths: list[str] = field(default_factory=list)  # the first ten of them
    server_errors: int = 0  # 5xx answers to the publisher's and the job submitter's requests
    push_server_errors: int = 0  # 5xx answers to push requests (/sse, SockJS), not nginx's 502 while the server is down
    cuts: int = 0
    connects: int = 0
    closes: Counter[str] = field(default_factory=Counter)
    by_transport: dict[str, dict[str, int]] = field(default_factory=dict)
    peak_rss_mb: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        # not asdict(): it rebuilds a Counter from (key, value) pairs, counting the pairs
        figures = {name: dict(v) if isinstance(v, Counter) else v for name, v in vars(self).items()}
        return json.dumps(figures, indent=2, sort_keys=True)


class EventChaos:
    def __init__(
        self,
        server: ServerProcess,
        nginx: Nginx | None,
        tls: ssl.SSLContext | None,
        size: Size,
        tokens: dict[str, str],
        log: Callable[[str], None] = lambda line: None,
        victim: ServerProcess | None = None,
    ):
        """`server` takes the changes and jobs and answers the final read of the streams; `victim` (by default the
        server itself) is the process restarted mid-stream and the one the direct clients use. In the multi-node
        mode they are two web nodes, and nginx spreads its clients over both."""
        self.server, self.nginx, self.tls, self.size, self.tokens = server, nginx, tls, size, tokens
        self.victim = victim or server
        began = time.monotonic()
        self.log = lambda line: log(f"[{time.monotonic() - began:6.1f} s] {line}")
        self.users = list(tokens)
        self.figures = Figures(size=asdict(size))
        self.acknowledged: dict[str, str] = {}  # path -> the stream its change goes to
        self.job_ids: list[int] = []
        self.ledgers: list[tuple[Ledger, str]] = []  # (ledger, user)
        self.progress = asyncio.Condition()  # notified at each acknowledged change

    async def _published(self, count: float) -> None:
        """Wait until `count` changes are acknowledged."""
        async with self.progress:
            await self.progress.wait_for(lambda: self.figures.published >= count)

    # the run ------------------------------------------------------------------------------------------------------
    def run(self) -> Figures:
        started = time.monotonic()
        with MemoryPeak(self.server) as memory:
            asyncio.run(self._run())
        self.figures.duration_s = round(time.monotonic() - started, 1)
        self.figures.peak_rss_mb = round(memory.peak_bytes / 2**20, 1)
        return self.figures

    async def _run(self) -> None:
        size = self.size
        async with httpx.AsyncClient(base_url=self.server.url, timeout=30) as http:
            self.http = http
            for user in self.users:  # the notebook each user's jobs run (announced before any client connects)
                notebook = (NOTEBOOKS / "tiny.ipynb").read_bytes()
                await self._write(f"users/{user}/tiny.ipynb", notebook, user, count=False)
            direct = Chaos(self.victim.url, None, size.cut_mean_s)
            proxied = Chaos(self.nginx.origin, self.tls, size.cut_mean_s) if self.nginx else direct
            chaoses = [direct] if proxied is direct else [direct, proxied]
            kinds = itertools.cycle(itertools.product(CLIENTS, ("direct", "nginx") if self.nginx else ("direct",)))
            tasks = []
            try:
                for index, (transport, via) in zip(range(size.clients), kinds, strict=False):
                    user = self.users[index % len(self.users)]
                    ledger = Ledger(f"{transport}-{via}-{index}", transport, via)
                    self.ledgers.append((ledger, user))
                    chaos = proxied if via == "nginx" else direct
                    tasks.append(asyncio.create_task(CLIENTS[transport](chaos, ledger, user, self.tokens[user])))
                connected = lambda: all(ledger.connects for ledger, _ in self.ledgers)  # noqa: E731
                await self._until(connected, "every client connected", timeout_s=60 + 2 * size.clients)
                base = {user: await self.positions(user) for user in self.users}
                self.log(f"{len(tasks)} clients connected; publishing {size.events} changes and {size.jobs} jobs")
                await asyncio.gather(self._publish(), self._submit_jobs(), self._restart_midway())
                self.log(f"published; restarts took {self.figures.restart_s} s; waiting for the jobs")
                await self._until(self._jobs_finished, "every job finished", timeout_s=300)
                final = {user: await self.positions(user) for user in self.users}
                for chaos in chaoses:
                    chaos.cutting = False
                    chaos.final = final
                self.log("jobs finished; waiting for the clients to catch up")
                with contextlib.suppress(AssertionError):
                    await self._until(lambda: all(ledger.caught_up(final[user]) for ledger, user in self.ledgers),
                                      "every client caught up", timeout_s=120)  # fmt: skip
            finally:
                for chaos in chaoses:
                    chaos.done.set()
                _, stuck = await asyncio.wait(tasks, timeout=30)
                for task in stuck:  # a client that does not stop when told is a finding, not a reason to hang
                    where = "; ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in task.get_stack(limit=8))
                    self.figures.errors.append(f"a client did not stop: {where}")
                    task.cancel()
            histories = {user: await self.history(user, base[user]) for user in self.users}
        self._tally(histories, final)

    async def _until(self, check: Any, what: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while not (await check() if asyncio.iscoroutinefunction(check) else check()):
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout_s} s: {what}")
            await asyncio.sleep(0.1)

    # what makes events --------------------------------------------------------------------------------------------
    async def _request(self, method: str, path: str, user: str, **kw: Any) -> httpx.Response:
        """A request that waits out the restart (connection refused meanwhile); 5xx answers are counted."""
        headers = {"Authorization": f"Bearer {self.tokens[user]}"}
        while True:
            try:
                answer = await self.http.request(method, path, headers=headers, **kw)
            except httpx.TransportError:
                await asyncio.sleep(0.2)
                continue
            if answer.status_code >= 500:
                self.figures.server_errors += 1
                self.figures.errors.append(f"{method} {path}: {answer.status_code} {answer.text[:200]}")
                await asyncio.sleep(0.2)
                continue
            return answer

    async def _write(self, path: str, content: bytes, user: str, *, count: bool = True) -> None:
        # overwrite: a change the restart cut off after it was written is written again (and announced then)
        answer = await self._request("PUT", f"/api/contents/{path}?overwrite=true", user, content=content)
        assert answer.status_code in (200, 201), answer.text
        if count:
            self.acknowledged[path] = f"user:{user}" if path.startswith("users/") else "broadcast"

    async def _publish(self) -> None:
        counter = itertools.count()

        async def writer() -> None:
            while (n := next(counter)) < self.size.events:
                user = self.users[n % len(self.users)]
                # every fifth change to the shared folder (the broadcast stream), the others to the user's own
                path = f"shared/e-{n:06d}.txt" if n % 5 == 4 else f"users/{user}/e-{n:06d}.txt"
                await self._write(path, str(n).encode(), user)
                self.figures.published += 1
                async with self.progress:
                    self.progress.notify_all()

        await asyncio.gather(*(writer() for _ in range(self.size.publishers)))

    async def _submit_jobs(self) -> None:
        for n in range(self.size.jobs):
            await self._published((n + 0.5) * self.size.events / max(1, self.size.jobs))
            user = self.users[n % len(self.users)]
            answer = await self._request("POST", "/api/jobs", user, json={"notebook": f"users/{user}/tiny.ipynb"})
            assert answer.status_code == 202, answer.text
            self.job_ids.append(int(answer.json()["id"]))

    async def _restart_midway(self) -> None:
        restarts = self.size.restarts
        for k, kind in enumerate(restarts):
            await self._published((k + 1) * self.size.events / (len(restarts) + 1))
            started = time.monotonic()
            await asyncio.to_thread(self.victim.stop, signal.SIGKILL if kind == "kill" else signal.SIGTERM)
            await asyncio.to_thread(self.victim.start, 300)
            self.figures.restart_s.append(round(time.monotonic() - started, 1))

    async def _jobs_finished(self) -> bool:
        states = []
        for job_id in self.job_ids:
            answer = await self._request("GET", f"/api/jobs/{job_id}", self._owner(job_id))
            states.append(answer.json()["state"])
        if all(state in FINISHED for state in states):
            self.figures.jobs = Counter(states)
            return True
        return False

    def _owner(self, job_id: int) -> str:
        return self.users[self.job_ids.index(job_id) % len(self.users)]

    # reading the truth --------------------------------------------------------------------------------------------
    async def positions(self, user: str) -> dict[str, str]:
        async with connect(f"ws://127.0.0.1:{self.server.port}/ws?token={self.tokens[user]}", open_timeout=60) as ws:
            welcome = json.loads(await ws.recv())
        return dict(welcome["streams"])

    async def history(self, user: str, since: dict[str, str]) -> History:
        """Every event of the user's streams after `since`, as the hub holds them: {stream: {offset: event}}."""
        found: History = {stream: {} for stream in since}
        url = f"ws://127.0.0.1:{self.server.port}/ws?token={self.tokens[user]}"
        async with connect(url, max_size=2**24, open_timeout=60) as ws:
            await ws.recv(), await ws.recv()  # welcome, snapshot
            for stream, position in since.items():
                await ws.send(json.dumps({"op": "subscribe", "stream": stream, "since": position}))
            await ws.send('{"op":"ping"}')
            while (message := json.loads(await asyncio.wait_for(ws.recv(), 60)))["op"] != "pong":
                if message["op"] == "recovered":
                    assert message["recovered"] is True, message
                elif message["op"] == "event":
                    found[message["stream"]][message["offset"]] = message
        return found

    # the check ----------------------------------------------------------------------------------------------------
    def _tally(self, histories: dict[str, History], final: dict[str, dict[str, str]]) -> None:
        figures = self.figures
        every = {stream: events for streams in histories.values() for stream, events in streams.items()}
        figures.stream_events = sum(len(events) for events in every.values())  # broadcast counted once
        paths = {(e["stream"], e["data"].get("path")) for events in every.values() for e in events.values()}
        unannounced = [path for path, stream in self.acknowledged.items() if (stream, path) not in paths]
        figures.unannounced, figures.unannounced_paths = len(unannounced), unannounced[:10]
        for ledger, user in self.ledgers:
            row = figures.by_transport.setdefault(f"{ledger.transport}/{ledger.via}", Counter())
            figures.cuts += ledger.cuts
            figures.connects += ledger.connects
            figures.closes.update(ledger.closes)
            figures.unrecovered += len(ledger.unrecovered)
            figures.errors += ledger.errors
            if not ledger.caught_up(final[user]):
                figures.not_caught_up += 1
                behind = f"{ledger.name} at {ledger.last}, not {final[user]}"
                figures.errors.append(f"{behind}; closes {dict(ledger.closes)}")
            for stream, start in ledger.start.items():
                epoch, first = split_position(start)
                history = histories[user][stream]
                expected = {o: e for o, e in history.items() if o > first and e["epoch"] == epoch}
                kept = ledger.kept.get(stream, [])
                offsets = [e["offset"] for e in kept]
                duplicated = len(offsets) - len(set(offsets))
                missing = [o for o in expected if o not in set(offsets)]
                coalesced = sum(expected[o]["type"] == "job.progress" for o in missing)
                mismatched = sum(
                    e["offset"] not in expected or expected[e["offset"]]["id"] != e["id"]
                    or expected[e["offset"]]["type"] != e["type"] or expected[e["offset"]]["data"] != e["data"]
                    for e in kept if e["offset"] > first
                )  # fmt: skip
                for name, value in (
                    ("expected", len(expected)),
                    ("delivered", len(set(offsets) & set(expected))),
                    ("lost", len(missing) - coalesced),
                    ("duplicated", duplicated),
                    ("resent", len(ledger.arrived.get(stream, [])) - len(kept)),
                    ("coalesced_progress", coalesced),
                    ("mismatched", mismatched),
                ):
                    setattr(figures, name, getattr(figures, name) + value)
                    row[name] += value
        figures.by_transport = {k: dict(v) for k, v in figures.by_transport.items()}
        answers = figures.closes.items()
        figures.push_server_errors = sum(n for k, n in answers if k.startswith("http 5") and k != "http 502")


def check(figures: Figures, size: Size, server_log: str) -> None:
    """What a run must show: the chaos happened, and nothing was lost, duplicated, altered or left unanswered."""
    print(figures.to_json())  # the figures of a run, for whoever reads the output (-s)
    assert figures.errors == [], figures.errors[:5]
    assert figures.cuts > figures.size["clients"] and figures.restart_s, "the chaos happened"
    assert figures.published == size.events and sum(figures.jobs.values()) == size.jobs, figures.jobs
    assert figures.stream_events >= size.events + 3 * size.jobs
    # what the server said of its hub and of announcements, for a failure's message
    complaints = "\n".join(line for line in server_log.splitlines() if "announced" in line or "hub" in line)
    assert figures.unannounced == 0, f"acknowledged changes with no event: {figures.unannounced_paths}\n{complaints}"
    assert figures.not_caught_up == 0 and figures.unrecovered == 0
    assert figures.lost == 0 and figures.duplicated == 0 and figures.mismatched == 0, figures.to_json()
    assert figures.delivered == figures.expected - figures.coalesced_progress
    assert figures.server_errors == 0
