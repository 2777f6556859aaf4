"""One webhook request: checked target, signed body, no redirects, a deadline for the whole exchange."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from nbrelay import __version__
from nbrelay.models import compact_json
from nbrelay.notify.outcome import Outcome
from nbrelay.notify.signing import signed_headers
from nbrelay.notify.ssrf import Itself, UrlRefused, resolve

RESPONSE_HEAD_BYTES = 500


def body_bytes(payload: dict[str, Any]) -> bytes:
    """The exact bytes sent and signed."""
    return compact_json(payload).encode()


async def send_webhook(
    client: httpx.AsyncClient,
    url: str,
    *,
    secret: str,
    message_id: str,
    payload: dict[str, Any],
    timeout_s: float,
    allow_private: bool,
    itself: Itself | None = None,
) -> Outcome:
    """POST `payload` to `url`, signed; delivered on a 2xx answer. Never raises for what the far side does.
    `itself` is the service's own address, refused as a target (checked again here: DNS may have changed)."""
    started = time.monotonic()

    def took_ms() -> float:
        return (time.monotonic() - started) * 1000

    body = body_bytes(payload)
    try:
        async with asyncio.timeout(timeout_s):
            target = await resolve(url, allow_private=allow_private, itself=itself)
            headers = {
                "host": target.host_header,
                "content-type": "application/json",
                "user-agent": f"nbrelay/{__version__} (webhooks)",
                **signed_headers(secret, message_id, int(time.time()), body),
            }
            extensions = {"sni_hostname": target.host} if target.url.scheme == "https" else {}
            request = client.build_request(
                "POST", target.pinned_url, content=body, headers=headers, extensions=extensions
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            try:
                head = b""
                async for chunk in response.aiter_raw():
                    head += chunk
                    if len(head) >= RESPONSE_HEAD_BYTES:
                        break
            finally:
                await response.aclose()
    except UrlRefused as exc:
        return Outcome(False, took_ms(), error=f"refused: {exc.message}")
    except TimeoutError:
        return Outcome(False, took_ms(), error=f"no answer within {timeout_s:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, took_ms(), error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    text = head[:RESPONSE_HEAD_BYTES].decode("utf-8", errors="replace")
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(True, took_ms(), status, text)
    why = f"answered {status}"
    if 300 <= status < 400:
        why += f" (redirects are not followed: {response.headers.get('location', 'no location')})"
    return Outcome(False, took_ms(), status, text, why)
