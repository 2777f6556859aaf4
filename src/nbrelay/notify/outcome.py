"""What one delivery attempt came to, as the delivery log keeps it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    latency_ms: float
    status_code: int | None = None  # the HTTP status (webhooks) or the SMTP reply code (e-mail)
    response_head: str | None = None  # the first bytes of the answer
    error: str | None = None  # why it did not arrive, for people
    permanent: bool = False  # the far side said never (an SMTP 5xx answer): no further attempts
