"""What an error says: the disk's refusals as answers, and outages as one line of log rather than a traceback."""

from __future__ import annotations

import errno
import logging
import sqlite3

import pytest

from nbrelay.errors import Conflict, Forbidden, InsufficientStorage, disk_refusal, is_outage, log_failure


@pytest.mark.parametrize(
    ("code", "kind", "status"),
    [
        (errno.ENOSPC, InsufficientStorage, 507),
        (errno.EACCES, Forbidden, 403),
        (errno.EROFS, Forbidden, 403),
        (errno.EIO, Conflict, 409),
    ],
)
def test_what_the_disk_refuses_is_an_answer(code: int, kind: type, status: int) -> None:
    refusal = disk_refusal(OSError(code, "as the disk said"), "write a.txt")
    assert isinstance(refusal, kind) and refusal.status == status
    assert refusal.message == "could not write a.txt: as the disk said"


class OperationalError(Exception):
    """A driver's class of that name (SQLAlchemy, psycopg, kombu all have one)."""


def test_an_outage_is_one_line_and_a_bug_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("nbrelay.test")
    for outage in (
        sqlite3.OperationalError("database is locked"),
        OperationalError("server\nclosed"),
        OSError(28, "x"),
    ):
        assert is_outage(outage)
    assert not is_outage(KeyError("job"))
    caplog.set_level(logging.WARNING)
    log_failure(
        logger, sqlite3.OperationalError("database\nis locked"), "handling %s of job %s failed", "job.output", 8
    )
    assert caplog.records[-1].getMessage() == "handling job.output of job 8 failed (database is locked)"
    assert caplog.records[-1].exc_info is None and caplog.records[-1].levelno == logging.WARNING
    log_failure(logger, KeyError("job"), "handling %s of job %s failed", "job.output", 8)
    assert caplog.records[-1].levelno == logging.ERROR and caplog.records[-1].exc_info is not None
