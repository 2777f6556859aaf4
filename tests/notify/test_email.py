"""E-mail notifications: the message itself, and a real job's e-mail arriving at an SMTP server (aiosmtpd)
started by the test."""

from __future__ import annotations

import email
import email.policy
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from nbrelay.config import Settings
from nbrelay.notify.email import build_message, send_email
from tests.conftest import free_port
from tests.live import LiveServer

PUBLIC = "https://nbrelay.example.com"


class Inbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def wait(self, count: int = 1, timeout_s: float = 30) -> list[tuple[list[str], EmailMessage]]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.messages) >= count, f"{len(self.messages)} messages after {timeout_s} s"
        return self.messages


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def payload(**data: Any) -> dict[str, Any]:
    base = {
        "job_id": 12,
        "notebook": "reports/daily.ipynb",
        "state": "failed",
        "duration_s": 83.2,
        "finished_at": "2026-12-04T09:00:00.000Z",
        "report_url": f"{PUBLIC}/api/jobs/12/report",
        "failing_cell": 4,
        "error": "KeyError: 'region'",
        "schedule_id": None,
    }
    return {"type": "job.failed", "data": {**base, **data}}


def test_the_message_says_what_happened_and_attaches_a_small_report(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path, data_dir=tmp_path, smtp_from="reports@example.com")
    report = tmp_path / "daily.html"
    report.write_text("<html><body>the report</body></html>")
    message = build_message(settings, "ops@example.com", payload(), report, "msg_abc")
    assert message["Subject"] == "[nbrelay] failed: reports/daily.ipynb (job 12)"
    assert message["From"] == "reports@example.com" and message["To"] == "ops@example.com"
    body = message.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    for expected in ("Duration:  1 min 23 s", "Failing cell: 4", "KeyError: 'region'", f"{PUBLIC}/api/jobs/12/report"):
        assert expected in text
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == "daily.html"
    assert attachment.get_content() == "<html><body>the report</body></html>"

    small = Settings(workspace=tmp_path, data_dir=tmp_path, smtp_attachment_max_bytes=10)
    message = build_message(
        small, "ops@example.com", payload(state="succeeded", failing_cell=None, error=None), report, "m"
    )
    assert list(message.iter_attachments()) == []
    text = message.get_content()
    assert "too large to attach" in text and "Failing cell" not in text
    assert message["Subject"].startswith("[nbrelay] succeeded: ")


async def test_no_smtp_host_or_a_refusing_server_is_an_outcome_not_an_exception(tmp_path: Path) -> None:
    message = build_message(Settings(workspace=tmp_path, data_dir=tmp_path), "a@example.com", payload(), None, "m")
    outcome = await send_email(Settings(workspace=tmp_path, data_dir=tmp_path), message)
    assert not outcome.delivered and "NBRELAY_SMTP_HOST" in (outcome.error or "")
    closed = Settings(
        workspace=tmp_path, data_dir=tmp_path, smtp_host="127.0.0.1", smtp_port=free_port(), smtp_security="none"
    )
    outcome = await send_email(closed, message)
    assert not outcome.delivered and "ConnectionRefusedError" in (outcome.error or "")


@pytest.mark.kernel
def test_a_failed_job_emails_its_owner_with_subject_link_and_report(
    tmp_path: Path, workspace: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    server = LiveServer(
        workspace,
        tmp_path / "data",
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_security="none",
        smtp_from="nbrelay@example.com",
        public_url=PUBLIC,
        notify_poll_s=0.1,
    ).start()
    try:
        http = httpx.Client(base_url=server.url, timeout=30)
        answer = http.put("/api/notify/email", json={"addresses": ["ops@example.com"], "on": ["failed"]})
        assert answer.status_code == 200 and answer.json()["smtp_configured"] is True
        ok = http.post("/api/jobs", json={"notebook": "tiny.ipynb"}).json()  # succeeded: no e-mail asked for
        job = http.post("/api/jobs", json={"notebook": "fail.ipynb"}).json()
        ((to, message),) = inbox.wait(1)
        assert to == ["ops@example.com"]
        assert message["Subject"] == f"[nbrelay] failed: fail.ipynb (job {job['id']})"
        body = message.get_body(("plain",))
        assert body is not None
        text = body.get_content()
        assert f"{PUBLIC}/api/jobs/{job['id']}/report" in text
        assert "Failing cell: 2" in text and "ValueError: boom in cell 2" in text
        (attachment,) = message.iter_attachments()
        assert attachment.get_filename() == "fail.html"
        assert "boom in cell 2" in attachment.get_content()
        log: list[dict[str, Any]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (log and log[0]["state"] == "delivered"):
            log = http.get("/api/notify/email/deliveries").json()["deliveries"]
            time.sleep(0.05)
        assert [(d["job_id"], d["target"], d["state"]) for d in log] == [(job["id"], "ops@example.com", "delivered")]
        assert log[0]["log"][0]["status_code"] == 250
        assert http.get(f"/api/jobs/{ok['id']}").json()["state"] == "succeeded"
        assert len(inbox.messages) == 1
    finally:
        server.stop()
