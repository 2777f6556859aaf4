"""Notifications in the job database: webhook endpoints, e-mail recipients, the outbox and its attempt log.

`enqueue` runs inside the transaction that saves a job's terminal state (SqlJobStore.save), so the outbox holds
exactly the deliveries of the states that were written. `NotificationStore` works on the job store's engine.
The tables come from migration 0007.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from nbrelay.models import Job, utcnow
from nbrelay.notify.outbox import EmailRule, WebhookRule, outbox_rows
from nbrelay.store.schedules import schedules
from nbrelay.store.shielded import calls_finish_when_cancelled
from nbrelay.store.tables import UtcDateTime, metadata

__all__ = [
    "Attempt",
    "Delivery",
    "EmailRecipients",
    "NotificationStore",
    "Webhook",
    "deliveries",
    "delivery_attempts",
    "email_recipients",
    "enqueue",
    "webhooks",
]

RESPONSE_HEAD_MAX_CHARS = 500

# Mirror migrations/versions/0007_notifications.py (tests/store/test_sql.py checks they do not drift apart).
webhooks = sa.Table(
    "webhooks",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("owner", sa.String, nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("events", sa.JSON, nullable=False),
    sa.Column("schedule_id", sa.Integer, nullable=True),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Index("ix_webhooks_owner_id", "owner", "id"),
    sqlite_autoincrement=True,
)

email_recipients = sa.Table(
    "email_recipients",
    metadata,
    sa.Column("owner", sa.String, primary_key=True),
    sa.Column("addresses", sa.JSON, nullable=False),
    sa.Column("notify_on", sa.JSON, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("webhook_id", sa.Integer, sa.ForeignKey("webhooks.id", ondelete="CASCADE"), nullable=True),
    sa.Column("target", sa.String(2048), nullable=False),
    sa.Column("owner", sa.String, nullable=False),
    sa.Column("job_id", sa.Integer, nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("message_id", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="pending"),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("claimed_until", UtcDateTime, nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=True),
    sa.UniqueConstraint("job_id", "kind", "target", name="uq_deliveries_job_kind_target"),
    sa.UniqueConstraint("message_id", name="uq_deliveries_message_id"),
    sa.Index("ix_deliveries_due", "state", "next_attempt_at"),
    sa.Index("ix_deliveries_webhook_id", "webhook_id", "id"),
    sa.Index("ix_deliveries_owner_kind", "owner", "kind", "id"),
    sqlite_autoincrement=True,
)

delivery_attempts = sa.Table(
    "delivery_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.Integer, sa.ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("attempted_at", UtcDateTime, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("response_head", sa.String, nullable=True),
    sa.Column("error", sa.String, nullable=True),
    sa.Column("node", sa.String(200), nullable=True),
    sa.Index("ix_delivery_attempts_delivery", "delivery_id", "id"),
    sqlite_autoincrement=True,
)


@dataclass(frozen=True, slots=True)
class Webhook:
    id: int
    owner: str
    url: str
    events: list[str]
    schedule_id: int | None
    secret: str
    created_at: datetime
    active: bool


@dataclass(frozen=True, slots=True)
class EmailRecipients:
    owner: str
    addresses: list[str]
    on: list[str]
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    kind: str  # webhook | email
    webhook_id: int | None
    target: str  # the webhook's id, or the e-mail address
    owner: str
    job_id: int
    event: str
    message_id: str
    payload: dict[str, Any]
    attempt: int  # attempts made so far
    next_attempt_at: datetime
    state: str  # pending | delivered | failed
    claimed_by: str | None
    claimed_until: datetime | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    delivery_id: int
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: float
    response_head: str | None
    error: str | None
    node: str | None


def _webhook(row: Row[Any]) -> Webhook:
    m = row._mapping
    return Webhook(
        id=m["id"],
        owner=m["owner"],
        url=m["url"],
        events=list(m["events"] or []),
        schedule_id=m["schedule_id"],
        secret=m["secret"],
        created_at=m["created_at"],
        active=bool(m["active"]),
    )


def _delivery(row: Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(**{f.name: m[f.name] for f in dataclasses.fields(Delivery)})


def _attempt(row: Row[Any]) -> Attempt:
    m = row._mapping
    return Attempt(**{f.name: m[f.name] for f in dataclasses.fields(Attempt)})


def enqueue(conn: sa.Connection, job: Job) -> int:
    """Write the deliveries owed for `job`'s terminal state on `conn`, in the caller's transaction; how many.
    Synchronous, for both of the job store's paths (an async connection runs it with `run_sync`)."""
    hooks = [
        WebhookRule(row.id, list(row.events or []), row.schedule_id)
        for row in conn.execute(
            sa.select(webhooks.c.id, webhooks.c.events, webhooks.c.schedule_id).where(
                webhooks.c.owner == job.owner, webhooks.c.active.is_(True)
            )
        )
    ]
    rules: list[EmailRule] = []
    mine = conn.execute(email_recipients.select().where(email_recipients.c.owner == job.owner)).first()
    if mine is not None:
        rules.append(EmailRule(list(mine.addresses or []), list(mine.notify_on or [])))
    if job.schedule_id is not None:
        query = sa.select(schedules.c.notify_email, schedules.c.notify_on).where(schedules.c.id == job.schedule_id)
        theirs = conn.execute(query).first()
        if theirs is not None:
            rules.append(EmailRule(list(theirs.notify_email or []), list(theirs.notify_on or [])))
    rows = outbox_rows(job, hooks, rules, now=utcnow())
    if rows:
        conn.execute(deliveries.insert(), rows)
    return len(rows)


@calls_finish_when_cancelled
class NotificationStore:
    """Webhooks, e-mail recipients and the outbox on the job store's engine."""

    def __init__(self, engine: AsyncEngine):
        self._engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    # webhooks ------------------------------------------------------------------------------------------------
    async def add_webhook(
        self, owner: str, url: str, events: Iterable[str], *, schedule_id: int | None, secret: str
    ) -> Webhook:
        values = {
            "owner": owner,
            "url": url,
            "events": list(events),
            "schedule_id": schedule_id,
            "secret": secret,
            "created_at": utcnow(),
            "active": True,
        }
        async with self._engine.begin() as conn:
            row = (await conn.execute(webhooks.insert().values(values).returning(*webhooks.c))).one()
        return _webhook(row)

    async def list_webhooks(self, owner: str) -> Sequence[Webhook]:
        query = webhooks.select().where(webhooks.c.owner == owner).order_by(webhooks.c.id)
        async with self._engine.connect() as conn:
            return [_webhook(row) for row in await conn.execute(query)]

    async def get_webhook(self, webhook_id: int, owner: str | None = None) -> Webhook | None:
        query = webhooks.select().where(webhooks.c.id == webhook_id)
        if owner is not None:
            query = query.where(webhooks.c.owner == owner)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return _webhook(row) if row is not None else None

    async def delete_webhook(self, webhook_id: int, owner: str) -> bool:
        """Delete the endpoint and its deliveries (pending ones are not sent any more)."""
        async with self._engine.begin() as conn:
            # Explicitly, not only by the foreign key's cascade: SQLite enforces it only with the pragma on.
            gone = sa.select(deliveries.c.id).where(deliveries.c.webhook_id == webhook_id)
            await conn.execute(delivery_attempts.delete().where(delivery_attempts.c.delivery_id.in_(gone)))
            await conn.execute(deliveries.delete().where(deliveries.c.webhook_id == webhook_id))
            query = webhooks.delete().where(webhooks.c.id == webhook_id, webhooks.c.owner == owner)
            result = await conn.execute(query)
        return result.rowcount == 1

    async def set_secret(self, webhook_id: int, owner: str, secret: str) -> Webhook | None:
        query = (
            webhooks.update()
            .where(webhooks.c.id == webhook_id, webhooks.c.owner == owner)
            .values(secret=secret)
            .returning(*webhooks.c)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(query)).first()
        return _webhook(row) if row is not None else None

    async def schedule_owner(self, schedule_id: int) -> str | None:
        """Whose schedule `schedule_id` is (None: there is none)."""
        query = sa.select(schedules.c.owner).where(schedules.c.id == schedule_id)
        async with self._engine.connect() as conn:
            return (await conn.execute(query)).scalar_one_or_none()

    # e-mail recipients ---------------------------------------------------------------------------------------
    async def get_email_recipients(self, owner: str) -> EmailRecipients:
        query = email_recipients.select().where(email_recipients.c.owner == owner)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            return EmailRecipients(owner, [], [], None)
        return EmailRecipients(owner, list(row.addresses or []), list(row.notify_on or []), row.updated_at)

    async def set_email_recipients(self, owner: str, addresses: list[str], on: list[str]) -> EmailRecipients:
        now = utcnow()
        async with self._engine.begin() as conn:
            query = email_recipients.update().where(email_recipients.c.owner == owner)
            result = await conn.execute(query.values(addresses=addresses, notify_on=on, updated_at=now))
            if result.rowcount == 0:
                values = {"owner": owner, "addresses": addresses, "notify_on": on, "updated_at": now}
                await conn.execute(email_recipients.insert().values(values))
        return EmailRecipients(owner, addresses, on, now)

    # the outbox ----------------------------------------------------------------------------------------------
    async def claim_due(
        self, node: str, *, limit: int, lease_s: float, busy_webhooks: Iterable[int] = ()
    ) -> Sequence[Delivery]:
        """Take up to `limit` pending deliveries that are due and not held by another node's lease, for
        `lease_s` seconds; skip those of `busy_webhooks` (endpoints this node already has enough in flight for)."""
        if limit <= 0:
            return []
        now = utcnow()
        c = deliveries.c
        due = sa.and_(
            c.state == "pending",
            c.next_attempt_at <= now,
            sa.or_(c.claimed_until.is_(None), c.claimed_until < now),
        )
        async with self._engine.connect() as conn:  # most polls find nothing: a read, no write transaction
            if (await conn.execute(sa.select(c.id).where(due).limit(1))).first() is None:
                return []
        busy = list(busy_webhooks)
        pick = sa.select(c.id).where(due).order_by(c.next_attempt_at, c.id).limit(limit)
        if busy:
            pick = pick.where(sa.or_(c.webhook_id.is_(None), c.webhook_id.not_in(busy)))
        if not self._sqlite:
            # Nodes skip the rows another node is claiming instead of queueing behind it; the outer WHERE checks
            # `due` again on the row as it is now (SQLite has a single writer: the UPDATE is atomic there).
            pick = pick.with_for_update(skip_locked=True)
        query = (
            deliveries.update()
            .where(c.id.in_(pick.scalar_subquery()), due)
            .values(claimed_by=node, claimed_until=now + timedelta(seconds=lease_s))
            .returning(*deliveries.c)
        )
        async with self._engine.begin() as conn:
            rows = (await conn.execute(query)).all()
        return sorted((_delivery(row) for row in rows), key=lambda d: (d.next_attempt_at, d.id))

    async def record_attempt(
        self,
        delivery: Delivery,
        node: str,
        *,
        status_code: int | None,
        latency_ms: float,
        response_head: str | None,
        error: str | None,
        delivered: bool,
        next_attempt_at: datetime | None,
    ) -> bool:
        """Log one attempt and move the delivery on: delivered, pending again at `next_attempt_at`, or failed
        (not delivered and no next attempt). Only while `node` holds the claim; True if the delivery moved."""
        now = utcnow()
        attempt = delivery.attempt + 1
        state = "delivered" if delivered else "pending" if next_attempt_at is not None else "failed"
        values: dict[str, Any] = {"attempt": attempt, "state": state, "claimed_by": None, "claimed_until": None}
        if state == "pending":
            values["next_attempt_at"] = next_attempt_at
        else:
            values["finished_at"] = now
        log = {
            "delivery_id": delivery.id,
            "attempt": attempt,
            "attempted_at": now,
            "status_code": status_code,
            "latency_ms": round(latency_ms, 1),
            "response_head": response_head[:RESPONSE_HEAD_MAX_CHARS] if response_head is not None else None,
            "error": error[:RESPONSE_HEAD_MAX_CHARS] if error is not None else None,
            "node": node,
        }
        c = deliveries.c
        async with self._engine.begin() as conn:
            await conn.execute(delivery_attempts.insert().values(log))
            query = deliveries.update().where(c.id == delivery.id, c.claimed_by == node, c.state == "pending")
            result = await conn.execute(query.values(values))
        return result.rowcount == 1

    async def release(self, delivery_id: int, node: str) -> None:
        """Give a claimed delivery back unsent (this node is stopping): due again at once for any node."""
        c = deliveries.c
        query = deliveries.update().where(c.id == delivery_id, c.claimed_by == node, c.state == "pending")
        async with self._engine.begin() as conn:
            await conn.execute(query.values(claimed_by=None, claimed_until=None))

    async def release_all(self) -> int:
        """Give back every claim (the one node of the embedded default starting: claims left are a dead
        process's, and waiting for their leases would only delay those deliveries); how many."""
        c = deliveries.c
        query = deliveries.update().where(c.state == "pending", c.claimed_by.is_not(None))
        async with self._engine.begin() as conn:
            result = await conn.execute(query.values(claimed_by=None, claimed_until=None))
        return int(result.rowcount)

    async def redeliver(self, delivery_id: int) -> Delivery | None:
        """Send the delivery again, whatever became of it: pending now, with a fresh round of attempts (its
        message id stays, so the receiver sees the same event)."""
        query = (
            deliveries.update()
            .where(deliveries.c.id == delivery_id)
            .values(
                state="pending",
                attempt=0,
                next_attempt_at=utcnow(),
                claimed_by=None,
                claimed_until=None,
                finished_at=None,
            )
            .returning(*deliveries.c)
        )
        async with self._engine.begin() as conn:
            row = (await conn.execute(query)).first()
        return _delivery(row) if row is not None else None

    async def get_delivery(self, delivery_id: int) -> Delivery | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(deliveries.select().where(deliveries.c.id == delivery_id))).first()
        return _delivery(row) if row is not None else None

    async def list_deliveries(
        self, *, owner: str, webhook_id: int | None = None, kind: str | None = None, limit: int = 50, offset: int = 0
    ) -> Sequence[tuple[Delivery, list[Attempt]]]:
        """Deliveries newest first, each with its attempts (oldest first)."""
        c = deliveries.c
        query = sa.select(deliveries).where(c.owner == owner)
        if webhook_id is not None:
            query = query.where(c.webhook_id == webhook_id)
        if kind is not None:
            query = query.where(c.kind == kind)
        query = query.order_by(c.id.desc()).limit(limit).offset(offset)
        async with self._engine.connect() as conn:
            found = [_delivery(row) for row in await conn.execute(query)]
            attempts: dict[int, list[Attempt]] = {d.id: [] for d in found}
            if found:
                a = delivery_attempts.c
                log = delivery_attempts.select().where(a.delivery_id.in_(list(attempts))).order_by(a.id)
                for row in await conn.execute(log):
                    attempts[row.delivery_id].append(_attempt(row))
        return [(d, attempts[d.id]) for d in found]

    async def count_deliveries(self, *, owner: str, webhook_id: int | None = None, kind: str | None = None) -> int:
        c = deliveries.c
        query = sa.select(sa.func.count()).select_from(deliveries).where(c.owner == owner)
        if webhook_id is not None:
            query = query.where(c.webhook_id == webhook_id)
        if kind is not None:
            query = query.where(c.kind == kind)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def pending_count(self) -> int:
        query = sa.select(sa.func.count()).select_from(deliveries).where(deliveries.c.state == "pending")
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
