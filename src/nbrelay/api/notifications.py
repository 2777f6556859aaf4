"""Webhook endpoints and their delivery log, and e-mail recipients: each user's own."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from nbrelay.api.auth import CurrentUser
from nbrelay.api.openapi import error_responses
from nbrelay.api.schemas import Limit, Offset
from nbrelay.models import isoformat
from nbrelay.notify.payload import EMAIL_STATES, WEBHOOK_EVENTS
from nbrelay.notify.service import ADDRESSES_MAX, Notifications
from nbrelay.store.base import MAX_ID
from nbrelay.store.notifications import Attempt, Delivery, EmailRecipients, Webhook

router = APIRouter(prefix="/api", tags=["notifications"])

# Spelled out so that the OpenAPI document lists them (tests check they agree with notify.payload's).
WebhookEvent = Literal["job.succeeded", "job.failed", "job.cancelled", "job.timed_out"]
EndState = Literal["succeeded", "failed", "cancelled", "timed_out"]
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID, description="the webhook endpoint's id")]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID, description="the delivery's id")]


def notifications(request: Request) -> Notifications:
    return request.app.state.notifications


Service = Annotated[Notifications, Depends(notifications)]


class NewWebhook(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(..., min_length=1, max_length=2048, description="http:// or https:// URL that receives a POST")
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(get_args(WebhookEvent)),
        min_length=1,
        max_length=len(WEBHOOK_EVENTS),
        description=f"which job events: {', '.join(WEBHOOK_EVENTS)} (default: all)",
    )
    schedule_id: int | None = Field(None, ge=1, le=MAX_ID, description="only this schedule's jobs (default: all)")


class WebhookOut(BaseModel):
    id: int
    url: str
    events: list[str]
    schedule_id: int | None
    created_at: str
    active: bool


class WebhookWithSecret(WebhookOut):
    secret: str = Field(..., description="whsec_…: the signing secret, shown only now (Standard Webhooks)")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class AttemptOut(BaseModel):
    attempt: int
    attempted_at: str
    status_code: int | None = Field(None, description="HTTP status (webhooks) or SMTP reply code (e-mail)")
    latency_ms: float
    response_head: str | None = Field(None, description="the first bytes of the answer")
    error: str | None
    node: str | None


class DeliveryOut(BaseModel):
    id: int
    kind: str = Field(..., description="webhook | email")
    target: str = Field(..., description="the webhook's id or the e-mail address")
    job_id: int
    event: str
    message_id: str = Field(..., description="the webhook-id header: the same across retries")
    state: str = Field(..., description="pending | delivered | failed")
    attempts: int
    next_attempt_at: str | None = Field(None, description="when the next attempt is due (pending only)")
    created_at: str
    finished_at: str | None
    payload: dict[str, Any]
    log: list[AttemptOut]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    total: int
    limit: int
    offset: int


class EmailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    addresses: list[Annotated[str, Field(max_length=254)]] = Field(..., max_length=ADDRESSES_MAX)
    on: list[EndState] = Field(
        default_factory=lambda: list[EndState](["failed"]), description=f"which end states: {', '.join(EMAIL_STATES)}"
    )


class EmailOut(BaseModel):
    addresses: list[str]
    on: list[str]
    updated_at: str | None
    smtp_configured: bool = Field(..., description="whether this server has an SMTP server to send through")


def _iso(ts: datetime | None) -> str | None:
    return isoformat(ts)


def _webhook(hook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=hook.id,
        url=hook.url,
        events=hook.events,
        schedule_id=hook.schedule_id,
        created_at=isoformat(hook.created_at) or "",
        active=hook.active,
    )


def _with_secret(hook: Webhook) -> WebhookWithSecret:
    """The endpoint with its secret: only in the answers that create or rotate it."""
    return WebhookWithSecret(**_webhook(hook).model_dump(), secret=hook.secret)


def _attempt(attempt: Attempt) -> AttemptOut:
    return AttemptOut(
        attempt=attempt.attempt,
        attempted_at=isoformat(attempt.attempted_at) or "",
        status_code=attempt.status_code,
        latency_ms=attempt.latency_ms,
        response_head=attempt.response_head,
        error=attempt.error,
        node=attempt.node,
    )


def delivery_out(delivery: Delivery, log: list[Attempt]) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        kind=delivery.kind,
        target=delivery.target,
        job_id=delivery.job_id,
        event=delivery.event,
        message_id=delivery.message_id,
        state=delivery.state,
        attempts=delivery.attempt,
        next_attempt_at=isoformat(delivery.next_attempt_at) if delivery.state == "pending" else None,
        created_at=isoformat(delivery.created_at) or "",
        finished_at=_iso(delivery.finished_at),
        payload=delivery.payload,
        log=[_attempt(a) for a in log],
    )


def _delivery_list(
    found: Sequence[tuple[Delivery, list[Attempt]]], total: int, limit: int, offset: int
) -> DeliveryList:
    return DeliveryList(deliveries=[delivery_out(d, log) for d, log in found], total=total, limit=limit, offset=offset)


def _email(recipients: EmailRecipients, smtp: bool) -> EmailOut:
    return EmailOut(
        addresses=recipients.addresses, on=recipients.on, updated_at=_iso(recipients.updated_at), smtp_configured=smtp
    )


@router.post(
    "/webhooks",
    status_code=201,
    response_model=WebhookWithSecret,
    responses=error_responses(404, 422),
    summary="Add a webhook endpoint; the answer holds its secret, shown only this once",
)
async def add_webhook(body: NewWebhook, service: Service, user: CurrentUser, response: Response) -> WebhookWithSecret:
    hook = await service.add_webhook(user, body.url, body.events, body.schedule_id)
    response.headers["Location"] = f"/api/webhooks/{hook.id}"
    return _with_secret(hook)


@router.get("/webhooks", response_model=WebhookList, summary="Your webhook endpoints")
async def list_webhooks(service: Service, user: CurrentUser) -> WebhookList:
    return WebhookList(webhooks=[_webhook(h) for h in await service.webhooks(user)])


@router.get(
    "/webhooks/{webhook_id}",
    response_model=WebhookOut,
    responses=error_responses(404),
    summary="One webhook endpoint (without its secret)",
)
async def get_webhook(webhook_id: WebhookId, service: Service, user: CurrentUser) -> WebhookOut:
    return _webhook(await service.webhook(user, webhook_id))


@router.delete(
    "/webhooks/{webhook_id}",
    status_code=204,
    response_class=Response,
    responses=error_responses(404),
    summary="Delete a webhook endpoint and its deliveries (pending ones are not sent)",
)
async def delete_webhook(webhook_id: WebhookId, service: Service, user: CurrentUser) -> Response:
    await service.delete_webhook(user, webhook_id)
    return Response(status_code=204)


@router.post(
    "/webhooks/{webhook_id}/rotate",
    response_model=WebhookWithSecret,
    responses=error_responses(404),
    summary="A new signing secret, shown only this once; the old one stops at once",
)
async def rotate_secret(webhook_id: WebhookId, service: Service, user: CurrentUser) -> WebhookWithSecret:
    hook = await service.rotate(user, webhook_id)
    return _with_secret(hook)


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response_model=DeliveryList,
    responses=error_responses(404),
    summary="The endpoint's delivery log, newest first: state, attempts, status codes, latency, answers",
)
async def list_deliveries(
    webhook_id: WebhookId, service: Service, user: CurrentUser, limit: Limit = 50, offset: Offset = 0
) -> DeliveryList:
    found, total = await service.deliveries(user, webhook_id, limit=limit, offset=offset)
    return _delivery_list(found, total, limit, offset)


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=202,
    response_model=DeliveryOut,
    responses=error_responses(404),
    summary="Send a delivery again (same webhook-id, a fresh round of attempts)",
)
async def redeliver(
    webhook_id: WebhookId, delivery_id: DeliveryId, service: Service, user: CurrentUser, request: Request
) -> DeliveryOut:
    delivery = await service.redeliver(user, webhook_id, delivery_id)
    request.app.state.delivery.wake()
    return delivery_out(delivery, [])


@router.get("/notify/email", response_model=EmailOut, summary="Your e-mail recipients")
async def get_email(service: Service, user: CurrentUser) -> EmailOut:
    return _email(await service.email(user), bool(service.settings.smtp_host))


@router.put(
    "/notify/email",
    response_model=EmailOut,
    responses=error_responses(422),
    summary="Set who gets an e-mail when your jobs end, and on which end states",
)
async def set_email(body: EmailIn, service: Service, user: CurrentUser) -> EmailOut:
    return _email(await service.set_email(user, body.addresses, body.on), bool(service.settings.smtp_host))


@router.get(
    "/notify/email/deliveries",
    response_model=DeliveryList,
    summary="Your e-mail deliveries, newest first, with their attempts",
)
async def email_deliveries(service: Service, user: CurrentUser, limit: Limit = 50, offset: Offset = 0) -> DeliveryList:
    found, total = await service.email_deliveries(user, limit=limit, offset=offset)
    return _delivery_list(found, total, limit, offset)
