"""Who hears of a job's end: the outbox rows for its webhooks and e-mail recipients (pure; the store writes
them in the transaction that saves the terminal state, so a restart loses none)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nbrelay.models import STATE_EVENT, Job
from nbrelay.notify.payload import job_payload


@dataclass(frozen=True, slots=True)
class WebhookRule:
    id: int
    events: list[str]
    schedule_id: int | None  # None: all the owner's jobs


@dataclass(frozen=True, slots=True)
class EmailRule:
    addresses: list[str]
    on: list[str]  # states: succeeded, failed, cancelled, timed_out


def new_message_id() -> str:
    """The webhook-id of one delivery: the same across its retries, so receivers can drop duplicates."""
    return f"msg_{secrets.token_urlsafe(18)}"


def outbox_rows(
    job: Job, webhooks: Iterable[WebhookRule], emails: Iterable[EmailRule], *, now: datetime
) -> list[dict[str, Any]]:
    """The deliveries owed for `job`'s terminal state: one per matching webhook, one per e-mail address."""
    event = STATE_EVENT[job.state]
    payload = job_payload(job)
    rows: list[dict[str, Any]] = []

    def row(kind: str, target: str, webhook_id: int | None) -> dict[str, Any]:
        return {
            "kind": kind,
            "webhook_id": webhook_id,
            "target": target,
            "owner": job.owner,
            "job_id": job.id,
            "event": event,
            "message_id": new_message_id(),
            "payload": payload,
            "attempt": 0,
            "next_attempt_at": now,
            "state": "pending",
            "created_at": now,
        }

    for hook in webhooks:
        if event in hook.events and (hook.schedule_id is None or hook.schedule_id == job.schedule_id):
            rows.append(row("webhook", str(hook.id), hook.id))
    seen: set[str] = set()
    for rule in emails:
        if job.state.value not in rule.on:
            continue
        for address in rule.addresses:
            key = address.strip().lower()
            if key and key not in seen:  # in the user's list and the schedule's: one message
                seen.add(key)
                rows.append(row("email", address.strip(), None))
    return rows
