"""The push service: job events into the hub, the open connections and their liveness sweep, and what a
session may see (it implements transports.port.PushPort)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from nbrelay.api.schemas import job_json
from nbrelay.auth import Authenticator
from nbrelay.config import Settings
from nbrelay.errors import HubUnavailable, NotFound
from nbrelay.hub import Hub
from nbrelay.hub.hub import Subscriber
from nbrelay.hub.publish_queue import PublishQueue
from nbrelay.jobs import JobService, User
from nbrelay.metrics import Metrics
from nbrelay.models import TERMINAL_EVENTS, Event, JobState
from nbrelay.push.transports.port import Connection
from nbrelay.push.transports.session import Close, CloseCode, Send, Session, Subscribe, may_read

log = logging.getLogger(__name__)
SNAPSHOT_JOBS = 500  # unfinished jobs a connection is sent as it opens, at most
_SWEEP_INTERVAL_S = 2.0  # at most; a quarter of heartbeat_s when that is shorter (pings stay on time)
# Each sweep goes over the connections in slices spread over its interval (at least this many, and more so that
# none holds more than _SWEEP_SLICE_MOST): a server with many connections never stops for all of them at once
# (at 19,500 connections a whole sweep held requests up for ~50 ms; docs/benchmarks.md).
_SWEEP_SLICES = 8
_SWEEP_SLICE_MOST = 500
GOODBYE = Close(CloseCode.SERVER_RESTART, "server restarting: reconnect and resume")
SIGNED_OUT = Close(CloseCode.UNAUTHORIZED, "signed out: the token was revoked; sign in again")
_SIGN_IN_CHECK_S = 5.0  # how often a live connection's token is checked again (through the token caches)


class Push:
    def __init__(self, settings: Settings, hub: Hub, jobs: JobService, auth: Authenticator, metrics: Metrics):
        self.settings = settings
        self.hub = hub
        self.jobs = jobs
        self.auth = auth
        self.metrics = metrics
        self.connections: set[Connection] = set()
        self.job_events = PublishQueue(hub)  # in order, and kept while the hub's broker is away
        self._per_user: dict[str, int] = {}
        self._drained = asyncio.Event()  # set whenever the last connection goes
        self._sweeper: asyncio.Task[None] | None = None
        self._checker: asyncio.Task[None] | None = None
        self._closing = False  # close_all has said goodbye: the server is stopping

    async def start(self) -> None:
        self.hub.observe_lag = self.metrics.hub_lag.observe
        await self.hub.start()
        self.job_events.start()
        self.jobs.listeners.append(self.on_job_event)
        self._sweeper = asyncio.create_task(self._sweep())
        if self.settings.auth_mode == "token":  # the one mode whose sign-ins can be revoked
            self._checker = asyncio.create_task(self._check_sign_ins())

    async def close_all(self, wait_s: float = 2.0) -> None:
        """Tell every client the server is going away (4001: reconnect and resume), and let the frames go out.
        A connection that opens from now on is told the same at once (add)."""
        self._closing = True
        for connection in list(self.connections):
            connection.close_soon(GOODBYE)
        if self.connections:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), wait_s)

    async def stop(self) -> None:
        tasks = [task for task in (self._sweeper, self._checker) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.close_all(wait_s=0.5)
        await self.job_events.close()
        await self.hub.close()

    # events --------------------------------------------------------------------------------------------------
    async def on_job_event(self, event: Event) -> None:
        """A job's events go to its owner's stream and to the job's own stream (after the store has them)."""
        owner, job = event.data.get("owner"), event.data.get("job")
        self.metrics.events_published.labels(event.type).inc()
        if event.type in TERMINAL_EVENTS:
            self.metrics.jobs.labels(event.data.get("state", event.type.removeprefix("job."))).inc()
            if event.data.get("duration_s") is not None:
                self.metrics.job_duration.observe(event.data["duration_s"])
        streams = ([f"user:{owner}"] if owner else []) + ([f"job:{job}"] if job is not None else [])
        if streams:
            await self.job_events.publish(event, streams)

    async def on_schedule_event(self, event: Event) -> None:
        """A schedule's events (schedule.*) go to its owner's stream, as its jobs' events do."""
        self.metrics.events_published.labels(event.type).inc()
        owner = event.data.get("owner")
        try:
            await self.hub.publish(event, [f"user:{owner}"])
        except HubUnavailable as exc:
            # The change itself is done; pages see it when they next list schedules.
            log.warning("%s of schedule %s not announced: %s", event.type, event.data.get("schedule"), exc)

    async def file_changed(self, stream: str, data: dict[str, Any]) -> None:
        self.metrics.events_published.labels("file.changed").inc()
        try:
            await self.hub.publish(Event("file.changed", data), [stream])
        except HubUnavailable as exc:
            # The change itself is done; only its announcement is lost (pages see it when they next list).
            log.warning("file.changed for %s not announced: %s", data.get("path"), exc)

    async def notice(self, text: str, **data: Any) -> Event:
        self.metrics.events_published.labels("notice").inc()
        (event,) = await self.hub.publish(Event("notice", {"text": text, **data}), ["broadcast"])
        return event

    # connections ---------------------------------------------------------------------------------------------
    def admit(self, user: User) -> Close | None:
        if len(self.connections) >= self.settings.max_connections:
            return Close(CloseCode.CONNECTION_LIMIT, "the server is at its connection limit")
        if self._per_user.get(user.name, 0) >= self.settings.max_connections_per_user:
            return Close(CloseCode.CONNECTION_LIMIT, "too many connections for this user")
        return None

    def add(self, connection: Connection) -> None:
        self.connections.add(connection)
        name = _user_name(connection)
        self._per_user[name] = self._per_user.get(name, 0) + 1
        self.metrics.connections.labels(connection.transport).inc()
        if self._closing:  # it came in while the server says goodbye (a request already under way)
            connection.close_soon(GOODBYE)

    def remove(self, connection: Connection, code: int | None) -> None:
        if connection not in self.connections:
            return
        self.connections.discard(connection)
        name = _user_name(connection)
        self._per_user[name] -= 1
        if not self._per_user[name]:
            del self._per_user[name]
        self.metrics.connections.labels(connection.transport).dec()
        if not self.connections:
            self._drained.set()
        self.metrics.disconnects.labels(connection.transport, str(code or 1000)).inc()

    def report(self) -> None:
        """Bring into the metrics what connections count locally on their hot path (events sent)."""
        for connection in self.connections:
            _report(connection)

    async def _sweep(self) -> None:
        """Every connection's liveness check and heartbeat (tick), and its count of events sent into the metrics,
        once per interval: the connections open when a round starts, a slice at a time."""
        interval = min(_SWEEP_INTERVAL_S, self.settings.heartbeat_s / 4)
        round_: list[Connection] = []
        at = size = 0
        pause = interval / _SWEEP_SLICES
        while True:
            await asyncio.sleep(pause)
            if at >= len(round_):
                round_, at = list(self.connections), 0
                slices = max(_SWEEP_SLICES, -(-len(round_) // _SWEEP_SLICE_MOST))
                size, pause = -(-len(round_) // slices), interval / slices
            now = time.monotonic()
            for connection in round_[at : at + size]:
                if connection in self.connections:  # not closed since the round started
                    connection.tick(now)
                    _report(connection)
            at += size

    async def _check_sign_ins(self) -> None:
        """A live connection lasts while its user's token does: every _SIGN_IN_CHECK_S, each token (or session)
        behind the open connections is checked once, and the connections of one revoked are closed (4500, as a
        handshake without it is refused). Found from outside: they delivered the user's events for good."""
        while True:
            await asyncio.sleep(_SIGN_IN_CHECK_S)
            by_proof: dict[Any, tuple[User, list[Connection]]] = {}
            for connection in list(self.connections):
                session = connection.session
                if session is not None and session.user.proof is not None:
                    by_proof.setdefault(session.user.proof, (session.user, []))[1].append(connection)
            for user, connections in by_proof.values():
                try:
                    signed_in = await self.auth.still_signed_in(user)
                except Exception:  # the store did not answer: checked again next time
                    log.warning("could not check the sign-in of %s's connections", user.name, exc_info=True)
                    continue
                if not signed_in:
                    for connection in connections:
                        connection.close_soon(SIGNED_OUT)

    # what a session may see -------------------------------------------------------------------------------
    async def may_follow(self, user: User, stream: str) -> bool:
        if stream.startswith("job:"):
            with contextlib.suppress(NotFound):
                await self.jobs.get(user, int(stream[4:]))
                return True
            return False
        return may_read(user, stream)

    async def follow(self, session: Session, subscriber: Subscriber, action: Subscribe) -> list[Send | Event]:
        """A subscribe the session accepted: what to send for it, in order. Refused: the error. Allowed: the
        subscription starts (once this returns nothing published is missed, on whichever node it is
        published), then, for a resume, what `resume` gives (the session drops any event that live delivery
        sends twice). HubUnavailable when the hub's broker does not answer."""
        session.following(action)
        if not await self.may_follow(session.user, action.stream):
            return [session.refuse(action.stream)]
        await self.hub.follow(subscriber, action.stream)
        return [] if action.since is None else await self.resume(session, action.stream, action.since)

    async def resume(self, session: Session, stream: str, since: str) -> list[Send | Event]:
        """The `recovered` answer for a resume from `since`, then the missed events (none if not recovered)."""
        resume = await self.hub.resume(stream, since)
        self.metrics.resumes.labels(str(resume.recovered).lower()).inc()
        return [session.resumed(stream, resume.recovered, resume.epoch, resume.last_offset), *resume.events]

    async def default_positions(self, user: User) -> dict[str, str]:
        streams = [f"user:{user.name}", "broadcast"]
        return {stream: await self.hub.position(stream) for stream in streams}

    async def snapshot(self, user: User) -> list[dict[str, Any]]:
        """The user's unfinished jobs, newest first: every running one, then the newest queued ones, SNAPSHOT_JOBS
        in all (found from outside: with 10,000 queued, the newest 500 were sent and the running job was not)."""
        owner = None if user.admin else user.name
        store = self.jobs.store
        running = await store.list_jobs(owner=owner, states=[JobState.RUNNING], limit=SNAPSHOT_JOBS)
        room = SNAPSHOT_JOBS - len(running)
        queued = await store.list_jobs(owner=owner, states=[JobState.QUEUED], limit=room) if room > 0 else []
        found = sorted([*running, *queued], key=lambda job: job.id, reverse=True)
        return [job_json(job, position) for job, position in await self.jobs.with_positions(found)]


def _user_name(connection: Connection) -> str:
    session = connection.session
    assert session is not None, "a connection is added once its session exists"
    return session.user.name


def _report(connection: Connection) -> None:
    report = getattr(connection, "report", None)
    if report is not None:
        report()
