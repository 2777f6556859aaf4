"""E-mail notifications: the message itself, and a real job's e-mail arriving at an SMTP server (aiosmtpd)
started by the test."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import email.utils
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from nbrelay.config import Settings
from nbrelay.models import JobState, utcnow
from nbrelay.notify.email import build_message, send_email
from tests.conftest import free_port
from tests.live import LiveServer
from tests.notify.ends import end
from tests.notify.test_delivery import Node, settings_for, settle

PUBLIC = "https://nbrelay.example.com"


class Inbox:
    """aiosmtpd's handler: keeps every message it is given, and every one it was offered (`offered`, the refused
    included). `answers` are given to DATA in turn (then 250), `rcpt_answers` to RCPT."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], EmailMessage]] = []
        self.offered: list[EmailMessage] = []
        self.answers: list[str] = []
        self.rcpt_answers: list[str] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        if self.rcpt_answers:
            return self.rcpt_answers.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.offered.append(parsed)
        if self.answers:
            return self.answers.pop(0)
        self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def wait(self, count: int = 1, timeout_s: float = 30) -> list[tuple[list[str], EmailMessage]]:
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(self.messages) >= count, f"{len(self.messages)} messages after {timeout_s} s"
        return self.messages


@contextlib.contextmanager
def smtp_server(**options: Any) -> Iterator[tuple[Inbox, int]]:
    """An aiosmtpd server on a free port; `options` are aiosmtpd.smtp.SMTP's (authentication, …)."""
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    with smtp_server() as started:
        yield started


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


def smtp_settings(tmp_path: Path, port: int, **overrides: Any) -> Settings:
    values = {"smtp_host": "127.0.0.1", "smtp_port": port, "smtp_security": "none", "smtp_from": "reports@example.com"}
    return Settings(workspace=tmp_path, data_dir=tmp_path, **{**values, **overrides})


@pytest.mark.parametrize("char", ["\x85", "\u2028", "\u2029", "\n", "\r", "\x0b", "\x1c", "\x00"])
async def test_a_notebook_whose_path_holds_a_line_break_still_gets_its_email(
    tmp_path: Path, smtp: tuple[Inbox, int], char: str
) -> None:
    inbox, port = smtp
    settings = smtp_settings(tmp_path, port)
    report = tmp_path / f"da{char}ily.html".replace("\x00", "0")  # no file name holds a NUL
    report.write_text("<html><body>the report</body></html>")
    message = build_message(settings, "ops@example.com", payload(notebook=f"reports/da{char}ily.ipynb"), report, "m")
    outcome = await send_email(settings, message)
    assert outcome.delivered, outcome.error
    ((_to, got),) = inbox.messages
    assert got["Subject"] == "[nbrelay] failed: reports/da ily.ipynb (job 12)"
    (attachment,) = got.iter_attachments()
    assert attachment.get_filename() in ("da ily.html", "da0ily.html")


def test_a_notebook_path_cannot_add_headers(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path, data_dir=tmp_path, smtp_from="reports@example.com")
    notebook = "a.ipynb\r\nBcc: victim@example.com\u2028X-Injected: 1\x85Reply-To: evil@example.com"
    message = build_message(settings, "ops@example.com", payload(notebook=notebook), None, "m")
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert {"Bcc", "X-Injected", "Reply-To"}.isdisjoint(parsed.keys())
    assert parsed["Subject"].startswith("[nbrelay] failed: a.ipynb  Bcc: victim@example.com X-Injected: 1 Reply-To")


def test_the_message_has_a_date_and_the_same_message_id_at_every_attempt(tmp_path: Path) -> None:
    settings = Settings(workspace=tmp_path, data_dir=tmp_path, smtp_from="nbrelay reports <reports@example.com>")
    first = build_message(settings, "ops@example.com", payload(), None, "msg_Ab-_1")
    again = build_message(settings, "ops@example.com", payload(), None, "msg_Ab-_1")
    other = build_message(settings, "ops@example.com", payload(), None, "msg_Cd-_2")
    assert first["Message-ID"] == again["Message-ID"] == "<msg_Ab-_1@example.com>"
    assert other["Message-ID"] == "<msg_Cd-_2@example.com>"
    sent_at = email.utils.parsedate_to_datetime(first["Date"])
    assert sent_at.tzinfo is not None and abs((sent_at - utcnow()).total_seconds()) < 60
    # No sender set: every node's default sender differs (nbrelay@<node name>); the public URL's host does not.
    public = Settings(workspace=tmp_path, data_dir=tmp_path, node_name="web-1", public_url=f"{PUBLIC}/nbrelay")
    assert build_message(public, "a@example.com", payload(), None, "msg_x")["Message-ID"] == (
        "<msg_x@nbrelay.example.com>"
    )


@pytest.mark.parametrize(
    ("stage", "answer", "permanent"),
    [
        ("data", "550 5.7.1 message refused", True),
        ("rcpt", "553 5.1.3 mailbox name not allowed", True),
        ("rcpt", "530 5.7.0 authentication required", True),
        ("data", "451 4.3.0 try again later", False),
        ("rcpt", "450 4.2.1 mailbox busy", False),
    ],
)
async def test_5xx_answers_are_permanent_failures_and_4xx_temporary(
    tmp_path: Path, smtp: tuple[Inbox, int], stage: str, answer: str, permanent: bool
) -> None:
    inbox, port = smtp
    (inbox.answers if stage == "data" else inbox.rcpt_answers).append(answer)
    settings = smtp_settings(tmp_path, port)
    outcome = await send_email(settings, build_message(settings, "ops@example.com", payload(), None, "m"))
    assert not outcome.delivered and outcome.status_code == int(answer[:3])
    assert outcome.permanent is permanent


async def test_a_retried_email_keeps_its_message_id_and_a_refused_one_is_not_retried(
    tmp_path: Path, smtp: tuple[Inbox, int]
) -> None:
    inbox, port = smtp
    inbox.answers = ["451 4.3.0 try again later"]
    settings = settings_for(
        tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_security="none", smtp_from="reports@example.com"
    )
    node = await Node(f"sqlite:///{tmp_path / 'jobs.db'}", settings, "n1").start()
    try:
        await node.notes.set_email_recipients("alice", ["ops@example.com"], ["failed"])
        retried = await end(node.store, JobState.FAILED)
        node.loop.wake()
        ((delivery, log),) = await settle(node.notes)
        assert delivery.job_id == retried.id and delivery.state == "delivered"
        assert [a.status_code for a in log] == [451, 250]
        first, second = inbox.offered
        assert first["Message-ID"] == second["Message-ID"] == f"<{delivery.message_id}@example.com>"
        assert first["Date"] and second["Date"]

        inbox.answers = ["550 5.1.1 no such mailbox"]
        refused = await end(node.store, JobState.FAILED)
        node.loop.wake()
        found = {d.job_id: (d, log) for d, log in await settle(node.notes)}
        delivery, log = found[refused.id]
        assert delivery.state == "failed" and delivery.attempt == 1 and [a.status_code for a in log] == [550]
        assert "permanent failure: not tried again" in (log[0].error or "")
        await asyncio.sleep(0.3)  # backoff is 0.05 s: a retry would have come by now
        assert len(inbox.offered) == 3
    finally:
        await node.stop()


def accepting(login: str, password: str) -> Any:
    """An aiosmtpd authenticator that accepts this one user name and password (compared as UTF-8 bytes)."""

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            login.encode(),
            password.encode(),
        )
        return AuthResult(success=ok, handled=False)

    return authenticator


# The test's SMTP server is on loopback: authentication without TLS is fine there.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("password", ["péss", "pass-word"])
async def test_a_login_with_a_non_ascii_password_uses_auth_plain_in_utf8(tmp_path: Path, password: str) -> None:
    with smtp_server(authenticator=accepting("nbrelay", password), auth_required=True, auth_require_tls=False) as (
        inbox,
        port,
    ):
        settings = smtp_settings(tmp_path, port, smtp_user="nbrelay", smtp_password=password)
        message = build_message(settings, "ops@example.com", payload(), None, "m")
        outcome = await send_email(settings, message)
        assert outcome.delivered, outcome.error
        assert len(inbox.messages) == 1
        wrong = smtp_settings(tmp_path, port, smtp_user="nbrelay", smtp_password="x" + password)
        outcome = await send_email(wrong, message)
        assert not outcome.delivered and outcome.status_code == 535
        assert "SMTPAuthenticationError" in (outcome.error or "") and len(inbox.messages) == 1


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_a_non_ascii_password_without_auth_plain_says_what_is_wrong(tmp_path: Path) -> None:
    options = {"auth_required": True, "auth_require_tls": False, "auth_exclude_mechanism": ["PLAIN"]}
    with smtp_server(authenticator=accepting("nbrelay", "péss"), **options) as (inbox, port):
        settings = smtp_settings(tmp_path, port, smtp_user="nbrelay", smtp_password="péss")
        outcome = await send_email(settings, build_message(settings, "ops@example.com", payload(), None, "m"))
    assert not outcome.delivered and inbox.messages == []
    assert (outcome.error or "").startswith("cannot log in: NBRELAY_SMTP_USER or NBRELAY_SMTP_PASSWORD has non-ASCII")
    assert "offers LOGIN" in (outcome.error or "")
