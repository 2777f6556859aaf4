"""Notifications as people manage them: their webhook endpoints (checked, secrets shown once, rotated), their
delivery log and redeliveries, their e-mail recipients. Each user sees only their own."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence

from nbrelay.config import Settings
from nbrelay.errors import NotFound, Unprocessable
from nbrelay.jobs import User
from nbrelay.notify.payload import EMAIL_STATES, WEBHOOK_EVENTS
from nbrelay.notify.signing import new_secret
from nbrelay.notify.ssrf import Itself, UrlRefused, resolve
from nbrelay.store.notifications import Attempt, Delivery, EmailRecipients, NotificationStore, Webhook

ADDRESSES_MAX = 20
WEBHOOKS_PER_USER_MAX = 50
_RESOLVE_TIMEOUT_S = 5.0
# Deliberately simple: one @, no spaces or angle brackets; the SMTP server has the last word.
_ADDRESS = re.compile(r"[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+")


def check_events(events: Sequence[str]) -> list[str]:
    unknown = [e for e in events if e not in WEBHOOK_EVENTS]
    if unknown or not events:
        raise Unprocessable(
            f"unknown event {unknown[0]!r}" if unknown else "name at least one event",
            code="invalid_events",
            hint=f"events are {', '.join(WEBHOOK_EVENTS)}",
        )
    return list(dict.fromkeys(events))


def check_email(addresses: Sequence[str], on: Sequence[str]) -> tuple[list[str], list[str]]:
    if len(addresses) > ADDRESSES_MAX:
        raise Unprocessable(f"at most {ADDRESSES_MAX} addresses", code="invalid_addresses")
    clean = [a.strip() for a in addresses]
    bad = [a for a in clean if len(a) > 254 or not _ADDRESS.fullmatch(a)]
    if bad:
        raise Unprocessable(f"not an e-mail address: {bad[0][:80]!r}", code="invalid_addresses")
    unknown = [s for s in on if s not in EMAIL_STATES]
    if unknown:
        raise Unprocessable(
            f"unknown state {unknown[0]!r}", code="invalid_states", hint=f"states are {', '.join(EMAIL_STATES)}"
        )
    return list(dict.fromkeys(clean)), list(dict.fromkeys(on))


class Notifications:
    def __init__(self, settings: Settings, store: NotificationStore):
        self.settings = settings
        self.store = store

    # webhooks ------------------------------------------------------------------------------------------------
    async def add_webhook(self, user: User, url: str, events: Sequence[str], schedule_id: int | None) -> Webhook:
        """A new endpoint of `user` (its secret is in the answer, and never shown again)."""
        events = check_events(events)
        try:
            async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
                target = await resolve(
                    url, allow_private=self.settings.webhook_allow_private, itself=Itself.of(self.settings)
                )
        except TimeoutError:
            raise UrlRefused(f"the host of {url[:80]!r} did not resolve in time", code="webhook_host_unknown") from None
        if schedule_id is not None:
            owner = await self.store.schedule_owner(schedule_id)
            if owner is None or owner != user.name:
                raise NotFound(f"no schedule {schedule_id}", code="schedule_not_found")
        if len(await self.store.list_webhooks(user.name)) >= WEBHOOKS_PER_USER_MAX:
            raise Unprocessable(f"at most {WEBHOOKS_PER_USER_MAX} webhook endpoints per user", code="too_many_webhooks")
        return await self.store.add_webhook(
            user.name, target.url.geturl(), events, schedule_id=schedule_id, secret=new_secret()
        )

    async def webhooks(self, user: User) -> Sequence[Webhook]:
        return await self.store.list_webhooks(user.name)

    async def webhook(self, user: User, webhook_id: int) -> Webhook:
        # Someone else's endpoint answers like a missing one.
        hook = await self.store.get_webhook(webhook_id, owner=user.name)
        if hook is None:
            raise NotFound(f"no webhook {webhook_id}", code="webhook_not_found")
        return hook

    async def delete_webhook(self, user: User, webhook_id: int) -> None:
        if not await self.store.delete_webhook(webhook_id, user.name):
            raise NotFound(f"no webhook {webhook_id}", code="webhook_not_found")

    async def rotate(self, user: User, webhook_id: int) -> Webhook:
        """A new secret for the endpoint; the old one stops signing at once."""
        hook = await self.store.set_secret(webhook_id, user.name, new_secret())
        if hook is None:
            raise NotFound(f"no webhook {webhook_id}", code="webhook_not_found")
        return hook

    async def deliveries(
        self, user: User, webhook_id: int, *, limit: int, offset: int
    ) -> tuple[Sequence[tuple[Delivery, list[Attempt]]], int]:
        await self.webhook(user, webhook_id)
        found = await self.store.list_deliveries(owner=user.name, webhook_id=webhook_id, limit=limit, offset=offset)
        return found, await self.store.count_deliveries(owner=user.name, webhook_id=webhook_id)

    async def redeliver(self, user: User, webhook_id: int, delivery_id: int) -> Delivery:
        await self.webhook(user, webhook_id)
        delivery = await self.store.get_delivery(delivery_id)
        if delivery is None or delivery.webhook_id != webhook_id or delivery.owner != user.name:
            raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}", code="delivery_not_found")
        again = await self.store.redeliver(delivery_id)
        if again is None:  # deleted with its endpoint meanwhile
            raise NotFound(f"no delivery {delivery_id} of webhook {webhook_id}", code="delivery_not_found")
        return again

    # e-mail --------------------------------------------------------------------------------------------------
    async def email(self, user: User) -> EmailRecipients:
        return await self.store.get_email_recipients(user.name)

    async def set_email(self, user: User, addresses: Sequence[str], on: Sequence[str]) -> EmailRecipients:
        clean, states = check_email(addresses, on)
        return await self.store.set_email_recipients(user.name, clean, states)

    async def email_deliveries(
        self, user: User, *, limit: int, offset: int
    ) -> tuple[Sequence[tuple[Delivery, list[Attempt]]], int]:
        found = await self.store.list_deliveries(owner=user.name, kind="email", limit=limit, offset=offset)
        return found, await self.store.count_deliveries(owner=user.name, kind="email")
