"""Standard Webhooks signatures, checked with the standardwebhooks package (what receivers use)."""

from __future__ import annotations

import base64
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from nbrelay.notify.signing import new_secret, secret_key, signature, signed_headers


def test_secret_is_whsec_base64_of_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert new_secret() != secret


def test_signed_headers_verify_with_standardwebhooks() -> None:
    secret = new_secret()
    body = b'{"type":"job.succeeded","data":{"job_id":7}}'
    headers = signed_headers(secret, "msg_abc", int(time.time()), body)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(body, headers) == {"type": "job.succeeded", "data": {"job_id": 7}}


def test_tampered_body_other_secret_or_old_timestamp_fail() -> None:
    secret = new_secret()
    body = b'{"a":1}'
    headers = signed_headers(secret, "msg_1", int(time.time()), body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    stale = signed_headers(secret, "msg_1", int(time.time()) - 3600, body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, stale)


def test_signature_is_the_specs_example() -> None:
    # The example of the Standard Webhooks specification (spec/standard-webhooks.md, "Signature scheme").
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == (
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


def test_a_secret_without_the_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
