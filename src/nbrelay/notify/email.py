"""One notification e-mail: a short message (state, notebook, duration, failing cell and error, report link)
with the report attached when it is small enough, sent with smtplib in a thread."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import smtplib
import ssl
import time
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nbrelay.config import Settings
from nbrelay.models import utcnow
from nbrelay.notify.outcome import Outcome
from nbrelay.notify.tls import notify_ssl_context

_DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
# smtplib blocks: its conversations run in threads of their own, so a hanging SMTP server holds these and never
# the threads the rest of the server shares (asyncio's default executor).
_SENDERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nbrelay-smtp")
# Line and paragraph separators, control and format characters: Python's email package refuses a header holding
# any that ends a line (\x85, U+2028, …), and the others have no business in a subject or a file name.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# What may stand on either side of the @ of a Message-ID (RFC 5322 dot-atom-text, less a few to stay plain).
_MSG_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


class SmtpLoginError(Exception):
    """The log-in cannot be made as configured (not the server's answer to it)."""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def one_line(text: str) -> str:
    """`text` safe in a header: every line break, control or format character (and lone surrogate, from a file
    name that was not UTF-8) a space. Notebook paths are users' text; a line break in one would otherwise stop
    every e-mail about it, or start a header of its own."""
    return "".join(" " if unicodedata.category(char) in _UNSAFE_CATEGORIES else char for char in text)


def _encodable(text: str) -> str:
    """`text` with lone surrogates (a file name that was not UTF-8) replaced: the body is sent as UTF-8."""
    return "".join("\ufffd" if unicodedata.category(char) == "Cs" else char for char in text)


def message_id_header(settings: Settings, message_id: str) -> str:
    """The Message-ID of one delivery: the same at every attempt, so a receiver can tell a retry. The delivery's
    id (random, unique) on the left; on the right a name of this installation that every node shares: the
    sender's domain, else the public URL's host."""
    domain = parseaddr(settings.smtp_from)[1].rpartition("@")[2] or urlsplit(settings.public_url).hostname or ""
    # An internationalised domain in its ASCII form; one that is not a usable domain is only cleaned, below: what
    # is left of it still tells installations apart.
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    domain = _MSG_ID_UNSAFE.sub("", domain).strip(".")
    left = _MSG_ID_UNSAFE.sub("", message_id) or "msg"
    return f"<{left}@{domain or 'nbrelay.invalid'}>"


def build_message(
    settings: Settings,
    to: str,
    payload: dict[str, Any],
    report: Path | None,
    message_id: str,
    *,
    sent_at: datetime | None = None,
) -> EmailMessage:
    """The e-mail announcing the job in `payload` (report links already absolute), `report` attached when it
    is at most smtp_attachment_max_bytes. `message_id` is the delivery's (the same for each attempt)."""
    data = payload.get("data") or {}
    notebook = one_line(str(data.get("notebook", "")))
    state = one_line(str(data.get("state", "")).replace("_", " "))
    message = EmailMessage()
    message["Subject"] = f"[nbrelay] {state}: {notebook} (job {one_line(str(data.get('job_id')))})"
    message["From"] = one_line(settings.smtp_from or f"nbrelay@{settings.node_name}")
    message["To"] = one_line(to)
    message["Date"] = format_datetime(sent_at or utcnow())
    message["Message-ID"] = message_id_header(settings, message_id)
    lines = [
        f"Job {data.get('job_id')} {state}.",
        "",
        f"Notebook:  {notebook}",
        f"State:     {state}",
        f"Duration:  {_duration(data.get('duration_s'))}",
        f"Finished:  {data.get('finished_at') or '—'}",
    ]
    if data.get("schedule_id") is not None:
        lines.append(f"Schedule:  {data['schedule_id']}")
    if data.get("failing_cell") is not None:
        lines.append(f"Failing cell: {data['failing_cell']}")
    if data.get("error"):
        lines.append(f"Error:     {data['error']}")
    attached = False
    if data.get("report_url"):
        lines += ["", f"Report: {data['report_url']}"]
        if report is not None and report.is_file():
            size = report.stat().st_size
            if size <= settings.smtp_attachment_max_bytes:
                attached = True
            else:
                lines.append(f"(The report, {size // 1024} KiB, is too large to attach; follow the link.)")
    message.set_content(_encodable("\n".join(lines) + "\n"))
    if attached and report is not None:
        message.add_attachment(
            report.read_bytes(), maintype="text", subtype="html", filename=one_line(report.name).replace('"', "")
        )
    return message


def _send(settings: Settings, message: EmailMessage, tls: ssl.SSLContext | None) -> tuple[int, str]:
    timeout_s = settings.notify_timeout_s
    port = settings.smtp_port or _DEFAULT_PORTS[settings.smtp_security]
    context = tls or notify_ssl_context(settings)  # the default CAs and notify_ca_file's, as webhooks
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(settings.smtp_host, port, timeout=timeout_s, context=context)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, port, timeout=timeout_s)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_user:
            _login(smtp, settings.smtp_user, settings.smtp_password.get_secret_value())
        smtp.send_message(message)
        code, answer = smtp.noop()
    return code, answer.decode(errors="replace")


def _login(smtp: smtplib.SMTP, user: str, password: str) -> None:
    """Log in. smtplib sends credentials as ASCII only; others go as AUTH PLAIN in UTF-8 (RFC 4616), the one
    common mechanism that says how to encode them."""
    if user.isascii() and password.isascii():
        smtp.login(user, password)
        return
    smtp.ehlo_or_helo_if_needed()
    offered = smtp.esmtp_features.get("auth", "").upper().split()
    if "PLAIN" not in offered:
        raise SmtpLoginError(
            "NBRELAY_SMTP_USER or NBRELAY_SMTP_PASSWORD has non-ASCII characters, which only AUTH PLAIN can carry, "
            f"and the SMTP server offers {' '.join(offered) or 'no AUTH'}; use ASCII credentials with this server"
        )
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode("ascii")
    code, answer = smtp.docmd("AUTH", f"PLAIN {token}")
    if code == 334:  # a server that takes the credentials only after its (empty) challenge
        code, answer = smtp.docmd(token)
    if code not in (235, 503):  # 503: logged in already
        raise smtplib.SMTPAuthenticationError(code, answer)


def _reply_code(exc: BaseException) -> int | None:
    """The SMTP reply code an exception carries; a refused recipient's for SMTPRecipientsRefused."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return next((code for code, _answer in exc.recipients.values()), None)
    code = getattr(exc, "smtp_code", None)
    return code if isinstance(code, int) else None


async def send_email(settings: Settings, message: EmailMessage, tls: ssl.SSLContext | None = None) -> Outcome:
    """Hand `message` to the SMTP server of the settings; never raises for what the server does. A 5xx answer
    is a permanent failure (the delivery is not tried again). `tls`: the TLS context made once by the caller
    (notify_ssl_context: ~35 ms of CPU to load the CAs); made here when not given."""
    started = time.monotonic()
    if not settings.smtp_host:
        return Outcome(False, 0.0, error="no SMTP server is configured (NBRELAY_SMTP_HOST)")
    try:
        # smtplib blocks; its own timeout bounds each step, the outer one the whole conversation.
        sending = asyncio.get_running_loop().run_in_executor(_SENDERS, _send, settings, message, tls)
        code, answer = await asyncio.wait_for(sending, settings.notify_timeout_s * 3)
    except TimeoutError:
        return Outcome(False, (time.monotonic() - started) * 1000, error="the SMTP server did not answer in time")
    except SmtpLoginError as exc:
        return Outcome(False, (time.monotonic() - started) * 1000, error=f"cannot log in: {exc}")
    except (OSError, smtplib.SMTPException) as exc:
        reply = _reply_code(exc)
        took_ms = (time.monotonic() - started) * 1000
        # 5xx is the server's "no, and do not ask again" (RFC 5321 4.2.1); 4xx is "not now".
        permanent = reply is not None and 500 <= reply < 600
        return Outcome(False, took_ms, reply, error=f"{type(exc).__name__}: {exc}", permanent=permanent)
    return Outcome(True, (time.monotonic() - started) * 1000, code, answer)
