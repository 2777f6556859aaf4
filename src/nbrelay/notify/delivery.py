"""The delivery loop, one on every web node: claims due outbox rows, sends them concurrently, logs each attempt
and schedules the next with exponential backoff and jitter.

Claims are leases in the store (claimed_by, claimed_until; `FOR UPDATE SKIP LOCKED` on PostgreSQL), so several
nodes send each delivery once, and a node that dies mid-send leaves its rows to the others when the lease ends.
Every send has a deadline and runs in a task of its own, at most `notify_concurrency` per node and
`notify_endpoint_concurrency` per webhook endpoint: a hanging receiver holds only its own deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx

from nbrelay.config import Settings
from nbrelay.errors import HubUnavailable, log_failure
from nbrelay.hub import Hub
from nbrelay.metrics import Metrics
from nbrelay.models import TERMINAL_EVENTS, Event, utcnow
from nbrelay.notify.email import build_message, send_email
from nbrelay.notify.outcome import Outcome
from nbrelay.notify.payload import absolute
from nbrelay.notify.service import Notifications
from nbrelay.notify.ssrf import Itself
from nbrelay.notify.tls import notify_ssl_context
from nbrelay.notify.webhook import send_webhook
from nbrelay.recorder import JobRecorder, worker_id
from nbrelay.store.base import JobStore
from nbrelay.store.notifications import Attempt, Delivery, NotificationStore
from nbrelay.store.sql import SqlJobStore

log = logging.getLogger(__name__)

# What a node is told after each attempt (the app publishes it to the owner's stream for the page).
AttemptListener = Callable[[Delivery, Attempt], Awaitable[None]]
_LEASE_MARGIN_S = 30.0  # beyond the send's own deadline, before another node may take the delivery over
_ERROR_PAUSE_S = 2.0


def retry_delay_s(settings: Settings, attempts: int, rng: random.Random | None = None) -> float:
    """How long after its `attempts`-th failed attempt a delivery is tried again: notify_backoff_s, doubling,
    each with +-25 % jitter (so endpoints that failed together are not all retried at the same moment)."""
    base = settings.notify_backoff_s * 2 ** (attempts - 1)
    return base * (0.75 + 0.5 * (rng or random).random())


def next_attempt_at(settings: Settings, delivery: Delivery, now: datetime) -> datetime | None:
    """When to try again after a failed attempt, or None when the delivery has had its attempts or its time."""
    attempts = delivery.attempt + 1
    if attempts >= settings.notify_max_attempts:
        return None
    at = now + timedelta(seconds=retry_delay_s(settings, attempts))
    if at > delivery.created_at + timedelta(seconds=settings.notify_horizon_s):
        return None
    return at


class DeliveryLoop:
    def __init__(self, settings: Settings, notifications: NotificationStore, jobs: JobStore, node: str):
        self.settings = settings
        self.notifications = notifications
        self.jobs = jobs
        self.node = node
        self.listeners: list[AttemptListener] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: dict[int, asyncio.Task[None]] = {}  # delivery id -> its send
        self._per_webhook: Counter[int] = Counter()
        self._client: httpx.AsyncClient | None = None
        self._tls: ssl.SSLContext | None = None  # the TLS context of webhooks and SMTP, made at start

    # life cycle ----------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.settings.multi_node:
            # One node only: a claim still held is a killed process's (the next lease would come 60 s later).
            released = await self.notifications.release_all()
            if released:
                log.info("%d deliveries claimed by a stopped process are due again", released)
        # No connection reuse: requests go to checked addresses, and a TLS connection made for one host name
        # must not carry another's request to the same address. Certificates are checked against the default CAs
        # and those of notify_ca_file (a private CA), the SMTP connections' too (notify/tls.py).
        self._tls = notify_ssl_context(self.settings)  # made once: loading the CAs costs ~35 ms of CPU
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            verify=self._tls,
            timeout=self.settings.notify_timeout_s,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self._task = asyncio.create_task(self._run(), name="notify-delivery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        sending = list(self._sending.values())
        for task in sending:
            task.cancel()  # each gives its delivery back (release), due at once for any node
        await asyncio.gather(*sending, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def wake(self) -> None:
        """Look for due deliveries now (a job just ended on this node), not at the next poll."""
        self._wake.set()

    # the loop ------------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._claim_and_send()
            except Exception as exc:
                log_failure(log, exc, "the delivery loop could not read the outbox; trying again")
                await asyncio.sleep(_ERROR_PAUSE_S)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns a wake that comes with a cancel and
            # swallows the cancel, and stop() then waited for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.notify_poll_s):
                    await self._wake.wait()

    async def _claim_and_send(self) -> None:
        free = self.settings.notify_concurrency - len(self._sending)
        cap = self.settings.notify_endpoint_concurrency
        busy = [hook for hook, n in self._per_webhook.items() if n >= cap]
        claimed = await self.notifications.claim_due(
            self.node,
            limit=free,
            lease_s=self.settings.notify_timeout_s * 3 + _LEASE_MARGIN_S,
            busy_webhooks=busy,
        )
        for delivery in claimed:
            hook = delivery.webhook_id
            if hook is not None and self._per_webhook[hook] >= cap:
                await self.notifications.release(delivery.id, self.node)  # next time, when a slot is free
                continue
            if hook is not None:
                self._per_webhook[hook] += 1
            task = asyncio.create_task(self._deliver(delivery), name=f"delivery-{delivery.id}")
            self._sending[delivery.id] = task
            task.add_done_callback(functools.partial(self._done, delivery))

    def _done(self, delivery: Delivery, _task: asyncio.Task[None]) -> None:
        self._sending.pop(delivery.id, None)
        if delivery.webhook_id is not None:
            self._per_webhook[delivery.webhook_id] -= 1
            if self._per_webhook[delivery.webhook_id] <= 0:
                del self._per_webhook[delivery.webhook_id]
        self._wake.set()  # a slot is free: rows that waited for it may go

    async def _deliver(self, delivery: Delivery) -> None:
        try:
            outcome = await self._send(delivery)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.notifications.release(delivery.id, self.node))
            raise
        except Exception as exc:  # a bug of ours must not end the loop nor lose the delivery
            log.exception("delivery %s", delivery.id)
            outcome = Outcome(False, 0.0, error=f"internal error: {type(exc).__name__}: {exc}")
        if outcome.permanent:
            outcome = dataclasses.replace(outcome, error=f"{outcome.error} (a permanent failure: not tried again)")
        retry_at = (
            None if outcome.delivered or outcome.permanent else next_attempt_at(self.settings, delivery, utcnow())
        )
        try:
            moved = await self.notifications.record_attempt(
                delivery,
                self.node,
                status_code=outcome.status_code,
                latency_ms=outcome.latency_ms,
                response_head=outcome.response_head,
                error=outcome.error,
                delivered=outcome.delivered,
                next_attempt_at=retry_at,
            )
        except Exception:
            log.exception("delivery %s: the attempt could not be recorded; its lease will bring it back", delivery.id)
            return
        if not moved:
            log.warning("delivery %s: the claim was lost meanwhile (another node holds it now)", delivery.id)
        level = logging.INFO if outcome.delivered else logging.WARNING
        log.log(
            level,
            "delivery %s (%s to %s, job %s): %s",
            delivery.id,
            delivery.event,
            delivery.kind,
            delivery.job_id,
            "delivered" if outcome.delivered else outcome.error,
        )
        attempt = Attempt(
            id=0,
            delivery_id=delivery.id,
            attempt=delivery.attempt + 1,
            attempted_at=utcnow(),
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            response_head=outcome.response_head,
            error=outcome.error,
            node=self.node,
        )
        state = "delivered" if outcome.delivered else "pending" if retry_at is not None else "failed"
        told = dataclasses.replace(
            delivery, state=state, attempt=attempt.attempt, next_attempt_at=retry_at or delivery.next_attempt_at
        )
        for listener in list(self.listeners):
            try:
                await listener(told, attempt)
            except Exception:
                log.exception("delivery listener failed")

    async def _send(self, delivery: Delivery) -> Outcome:
        payload = absolute(delivery.payload, self.settings.public_url)
        if delivery.kind == "email":
            job = await self.jobs.get_job(delivery.job_id)
            report = Path(job.report_path) if job is not None and job.report_path else None
            message = await asyncio.to_thread(
                build_message, self.settings, delivery.target, payload, report, delivery.message_id
            )
            return await send_email(self.settings, message, self._tls)
        hook = await self.notifications.get_webhook(delivery.webhook_id) if delivery.webhook_id else None
        if hook is None or not hook.active:
            return Outcome(False, 0.0, error="the endpoint was deleted or disabled")
        assert self._client is not None, "the loop sends only between start and stop"
        return await send_webhook(
            self._client,
            hook.url,
            secret=hook.secret,
            message_id=delivery.message_id,
            payload=payload,
            timeout_s=self.settings.notify_timeout_s,
            allow_private=self.settings.webhook_allow_private,
            itself=Itself.of(self.settings),
        )


def attempt_event(delivery: Delivery, attempt: Attempt) -> Event:
    """The push event telling a delivery's owner what its last attempt came to (the page's delivery log)."""
    return Event(
        "delivery.attempted",
        {
            "delivery": delivery.id,
            "kind": delivery.kind,
            "webhook": delivery.webhook_id,
            "job": delivery.job_id,
            "event": delivery.event,
            "state": delivery.state,
            "attempt": attempt.attempt,
            "status_code": attempt.status_code,
            "latency_ms": round(attempt.latency_ms, 1),
            "error": attempt.error,
        },
    )


def open_delivery(
    settings: Settings, store: JobStore, hub: Hub, recorder: JobRecorder, metrics: Metrics
) -> tuple[Notifications, DeliveryLoop]:
    """The notifications service and this node's delivery loop on the job store's database; each attempt is
    announced on its owner's stream, and a job ending here with deliveries owed wakes the loop at once."""
    if not isinstance(store, SqlJobStore):
        raise TypeError(f"notifications need the SQL job store, not {type(store).__name__}")
    notifications = NotificationStore(store.engine)
    loop = DeliveryLoop(settings, notifications, store, worker_id(settings))

    async def announce(delivery: Delivery, attempt: Attempt) -> None:
        metrics.notify_attempts.labels(delivery.kind, delivery.state).inc()
        metrics.notify_latency.labels(delivery.kind).observe(attempt.latency_ms / 1000)
        try:
            await hub.publish(attempt_event(delivery, attempt), [f"user:{delivery.owner}"])
        except HubUnavailable as exc:  # the log has it; only the page's live update is lost
            log.warning("delivery %s: attempt not announced: %s", delivery.id, exc)

    seen = store.outbox_writes

    async def wake(event: Event) -> None:
        nonlocal seen
        if event.type in TERMINAL_EVENTS and store.outbox_writes != seen:  # its end put deliveries in the outbox
            seen = store.outbox_writes
            loop.wake()

    loop.listeners.append(announce)
    recorder.listeners.append(wake)
    return Notifications(settings, notifications), loop
