"""The TLS client settings of notifications: webhook requests (delivery.py) and SMTP connections (email.py)."""

from __future__ import annotations

import ssl

import certifi

from nbrelay.config import Settings


def notify_ssl_context(settings: Settings) -> ssl.SSLContext:
    """Certificates checked as usual (chain and host name) against the CAs httpx trusts by default (certifi's
    bundle: webhooks trusted it before this setting, and it is there where the system has no CA store), the
    system's CA store (where a company installs its CA for every program) and, in addition, the CAs of
    `notify_ca_file` (a private CA of the company's webhook endpoints or SMTP server). Given a file,
    ssl.create_default_context trusts only that file: the others are loaded beside it here. The file was checked
    when the settings were made (it holds at least one certificate)."""
    context = ssl.create_default_context(cafile=certifi.where())
    context.load_default_certs()
    if settings.notify_ca_file is not None:
        context.load_verify_locations(cafile=settings.notify_ca_file)
    return context
