"""A company's private CA (NBRELAY_NOTIFY_CA_FILE): webhook endpoints and SMTP servers whose certificates it signed
are refused without the setting (the delivery log says the certificate could not be verified) and reached with
it, while those of the system's CAs are reached either way. Real HTTPS receivers and a real SMTP server (STARTTLS
and implicit TLS), with certificates made by the test; a CA standing for a public one is put in the system's store
through SSL_CERT_FILE (OpenSSL reads it for the default store)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from nbrelay.config import Settings
from nbrelay.models import JobState
from nbrelay.notify.email import build_message, send_email
from nbrelay.notify.tls import notify_ssl_context
from nbrelay.store.notifications import Attempt, Delivery
from tests.notify.ends import end
from tests.notify.pki import PrivateCa
from tests.notify.receiver import Receiver, verify
from tests.notify.test_delivery import Node, settings_for, settle
from tests.notify.test_email import payload, smtp_server, smtp_settings

SECRET = "whsec_" + "T" * 44
UNVERIFIED = "CERTIFICATE_VERIFY_FAILED"


@pytest.fixture(scope="session")
def company_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    return PrivateCa.make(tmp_path_factory.mktemp("company-ca"), "nbrelay test company CA")


@pytest.fixture(scope="session")
def public_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCa:
    return PrivateCa.make(tmp_path_factory.mktemp("public-ca"), "nbrelay test public CA")


@pytest.fixture
def system_store(public_ca: PrivateCa, monkeypatch: pytest.MonkeyPatch) -> PrivateCa:
    """`public_ca` as the system's CA store: ssl.create_default_context() trusts it (and not the company's CA)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(public_ca.ca))
    return public_ca


@pytest.fixture
def receivers(company_ca: PrivateCa, system_store: PrivateCa) -> Iterator[tuple[Receiver, Receiver]]:
    """HTTPS endpoints: one with a certificate of the company's CA, one with a certificate of a public CA."""
    private = Receiver(tls=company_ca.server_context()).start()
    public = Receiver(tls=system_store.server_context()).start()
    yield private, public
    private.stop()
    public.stop()


def trusted(settings: Settings) -> set[bytes]:
    """The CA certificates (DER) that notify_ssl_context trusts with these settings."""
    return set(notify_ssl_context(settings).get_ca_certs(binary_form=True))


def der(ca: PrivateCa) -> bytes:
    return ssl.PEM_cert_to_DER_cert(ca.ca.read_text())


def test_the_context_adds_the_private_ca_to_the_system_store_and_still_verifies(
    tmp_path: Path, company_ca: PrivateCa, system_store: PrivateCa
) -> None:
    plain = Settings(workspace=tmp_path, data_dir=tmp_path)
    certifis = ssl.create_default_context(cafile=certifi.where()).get_ca_certs(binary_form=True)
    assert trusted(plain) == {der(system_store), *certifis}  # the system's store and httpx's default bundle
    trusting = Settings(workspace=tmp_path, data_dir=tmp_path, notify_ca_file=company_ca.ca)
    assert trusted(trusting) == trusted(plain) | {der(company_ca)}  # in addition, not instead
    context = notify_ssl_context(trusting)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


async def test_a_webhook_to_an_endpoint_of_a_private_ca_is_delivered_once_notify_ca_file_names_it(
    tmp_path: Path, company_ca: PrivateCa, receivers: tuple[Receiver, Receiver]
) -> None:
    private, public = receivers
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    hooks: dict[str, int] = {}  # receiver ("private", "public") -> its endpoint's id

    async def send(node: Node) -> dict[str, tuple[Delivery, list[Attempt]]]:
        """Each endpoint's delivery and its log once the loop has tried it, by receiver ("private", "public")."""
        node.loop.wake()
        found = {delivery.webhook_id: (delivery, log) for delivery, log in await settle(node.notes)}
        return {name: found[hook] for name, hook in hooks.items()}

    plain = await Node(url, settings_for(tmp_path, notify_max_attempts=1), "n1").start()
    try:
        for name, receiver in (("private", private), ("public", public)):
            added = plain.notes.add_webhook("alice", receiver.url(), ["job.failed"], schedule_id=None, secret=SECRET)
            hooks[name] = (await added).id
        await end(plain.store, JobState.FAILED)
        sent = await send(plain)
    finally:
        await plain.stop()
    failed, log = sent["private"]
    assert failed.state == "failed" and log[0].status_code is None
    assert UNVERIFIED in (log[0].error or "") and "ConnectError" in (log[0].error or ""), log[0].error
    assert private.received == []
    assert sent["public"][0].state == "delivered"  # the system's CAs are trusted

    trusting = settings_for(tmp_path, notify_max_attempts=1, notify_ca_file=company_ca.ca)
    node = await Node(url, trusting, "n2").start()
    try:
        await node.notes.redeliver(failed.id)
        sent = await send(node)
        delivery, log = sent["private"]
        assert delivery.state == "delivered" and [a.status_code for a in log] == [None, 200], log
        (got,) = await asyncio.to_thread(private.wait_for, "/hook", 1)
        assert verify(SECRET, got)["type"] == "job.failed" and got.headers["webhook-id"] == delivery.message_id
        # A job's end with the setting: the private CA's endpoint and the public one both get it.
        job = await end(node.store, JobState.FAILED)
        node.loop.wake()
        for receiver, count in ((private, 2), (public, 2)):
            requests = await asyncio.to_thread(receiver.wait_for, "/hook", count)
            assert verify(SECRET, requests[-1])["data"]["job_id"] == job.id
    finally:
        await node.stop()


@pytest.mark.parametrize("security", ["starttls", "tls"])
async def test_an_smtp_server_of_a_private_ca_is_used_once_notify_ca_file_names_it(
    tmp_path: Path, company_ca: PrivateCa, system_store: PrivateCa, security: str
) -> None:
    # STARTTLS: aiosmtpd's tls_context, and no mail without it; implicit TLS: the controller's ssl_context.
    key = "tls_context" if security == "starttls" else "ssl_context"
    for ca, trusted in ((company_ca, False), (company_ca, True), (system_store, True)):
        options: dict[str, Any] = {key: ca.server_context()}
        if security == "starttls":
            options["require_starttls"] = True
        with smtp_server(**options) as (inbox, port):
            extra = {"notify_ca_file": company_ca.ca} if trusted else {}
            settings = smtp_settings(tmp_path, port, smtp_security=security, **extra)
            outcome = await send_email(settings, build_message(settings, "ops@example.com", payload(), None, "m"))
        if ca is company_ca and not trusted:
            assert not outcome.delivered and UNVERIFIED in (outcome.error or ""), outcome.error
            assert "SSLCertVerificationError" in (outcome.error or "") and inbox.offered == []
        else:  # the company's CA when named, and a public one as well
            assert outcome.delivered, outcome.error
            ((to, message),) = inbox.messages
            assert to == ["ops@example.com"] and message["Subject"].startswith("[nbrelay] failed: ")
