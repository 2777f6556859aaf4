"""One notification e-mail: a short message (state, notebook, duration, failing cell and error, report link)
with the report attached when it is small enough, sent with smtplib in a thread."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from nbrelay.config import Settings
from nbrelay.notify.outcome import Outcome

_DEFAULT_PORTS = {"tls": 465, "starttls": 587, "none": 25}
# smtplib blocks: its conversations run in threads of their own, so a hanging SMTP server holds these and never
# the threads the rest of the server shares (asyncio's default executor).
_SENDERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="nbrelay-smtp")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def build_message(
    settings: Settings, to: str, payload: dict[str, Any], report: Path | None, message_id: str
) -> EmailMessage:
    """The e-mail announcing the job in `payload` (report links already absolute), `report` attached when it
    is at most smtp_attachment_max_bytes."""
    data = payload.get("data") or {}
    notebook = str(data.get("notebook", ""))
    state = str(data.get("state", "")).replace("_", " ")
    message = EmailMessage()
    message["Subject"] = f"[nbrelay] {state}: {notebook} (job {data.get('job_id')})"
    message["From"] = settings.smtp_from or f"nbrelay@{settings.node_name}"
    message["To"] = to
    message["Message-ID"] = make_msgid(idstring=message_id.removeprefix("msg_")[:20], domain="nbrelay")
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
    message.set_content("\n".join(lines) + "\n")
    if attached and report is not None:
        message.add_attachment(
            report.read_bytes(), maintype="text", subtype="html", filename=report.name.replace('"', "")
        )
    return message


def _send(settings: Settings, message: EmailMessage) -> tuple[int, str]:
    timeout_s = settings.notify_timeout_s
    port = settings.smtp_port or _DEFAULT_PORTS[settings.smtp_security]
    context = ssl.create_default_context()
    smtp: smtplib.SMTP
    if settings.smtp_security == "tls":
        smtp = smtplib.SMTP_SSL(settings.smtp_host, port, timeout=timeout_s, context=context)
    else:
        smtp = smtplib.SMTP(settings.smtp_host, port, timeout=timeout_s)
    with smtp:
        if settings.smtp_security == "starttls":
            smtp.starttls(context=context)
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
        smtp.send_message(message)
        code, answer = smtp.noop()
    return code, answer.decode(errors="replace")


async def send_email(settings: Settings, message: EmailMessage) -> Outcome:
    """Hand `message` to the SMTP server of the settings; never raises for what the server does."""
    started = time.monotonic()
    if not settings.smtp_host:
        return Outcome(False, 0.0, error="no SMTP server is configured (NBRELAY_SMTP_HOST)")
    try:
        # smtplib blocks; its own timeout bounds each step, the outer one the whole conversation.
        sending = asyncio.get_running_loop().run_in_executor(_SENDERS, _send, settings, message)
        code, answer = await asyncio.wait_for(sending, settings.notify_timeout_s * 3)
    except TimeoutError:
        return Outcome(False, (time.monotonic() - started) * 1000, error="the SMTP server did not answer in time")
    except (OSError, smtplib.SMTPException) as exc:
        smtp_code = getattr(exc, "smtp_code", None)
        took_ms = (time.monotonic() - started) * 1000
        return Outcome(False, took_ms, smtp_code, error=f"{type(exc).__name__}: {exc}")
    return Outcome(True, (time.monotonic() - started) * 1000, code, answer)
