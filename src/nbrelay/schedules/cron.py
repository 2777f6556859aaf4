"""Cron expressions in a time zone: checking them and listing their fire times (cronsim does the parsing).

Pure functions, no I/O. Times in and out are timezone-aware; what a tick is across DST changes:

- a local time that does not exist (the hour skipped in spring) runs once, at the next valid time (02:30 on the
  spring-forward day runs at 03:00; `*/30 * * * *` runs at 01:30 then 03:00);
- a local time that happens twice (the hour repeated in autumn) runs once, at its first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

__all__ = ["NAMES", "CronError", "latest_tick", "next_runs", "normalize", "ticks", "zone"]

# The @names cron daemons know, as the five fields they stand for (@reboot has no place in a scheduler).
NAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = "minute hour day-of-month month day-of-week"
_EPOCH = datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC"))


class CronError(ValueError):
    """A cron expression or a time zone that cannot be used; the message says what was expected."""

    def __init__(self, message: str, *, field: str):
        super().__init__(message)
        self.field = field


def normalize(expr: str) -> str:
    """The five fields `expr` stands for (an @name becomes its fields), or CronError saying what is wrong."""
    text = " ".join(str(expr).split())
    fields = NAMES.get(text.lower(), text)
    if text.startswith("@") and text.lower() not in NAMES:
        raise CronError(f"unknown cron name {text!r}; use one of {', '.join(NAMES)}", field="cron")
    if len(fields.split()) != 5:
        raise CronError(
            f"cron expression {text!r} has {len(fields.split())} fields; expected 5 ({_FIELDS}) or an @name "
            f"({', '.join(NAMES)})",
            field="cron",
        )
    try:
        next(CronSim(fields, _EPOCH))
    except (CronSimError, StopIteration) as exc:
        problem = str(exc) or "no time matches it"
        raise CronError(f"cron expression {text!r}: {problem} (fields: {_FIELDS})", field="cron") from None
    return fields


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (Europe/Berlin, UTC, …), or CronError."""
    try:
        if not name or name != name.strip() or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"unknown time zone {name!r}; expected an IANA name such as Europe/Berlin, America/New_York or UTC",
            field="timezone",
        ) from None


def _second_occurrence(local: datetime) -> bool:
    # The same wall time with fold=0 has another offset: this is the repeated hour's second pass.
    return local.replace(fold=0).utcoffset() != local.utcoffset()


def ticks(expr: str, tz: ZoneInfo, after: datetime) -> Iterator[datetime]:
    """The fire times strictly after `after`, in `tz`, forever (the DST rules of the module docstring)."""
    last = after
    for local in CronSim(normalize(expr), after.astimezone(tz)):
        if _second_occurrence(local) or local <= last:
            continue  # a repeated wall time, or an imaginary time moved onto a real tick: once only
        last = local
        yield local


def next_runs(expr: str, tz: ZoneInfo, after: datetime, count: int = 5) -> list[datetime]:
    """The next `count` fire times after `after`, in `tz`."""
    found = ticks(expr, tz, after)
    return [next(found) for _ in range(count)]


def latest_tick(expr: str, tz: ZoneInfo, after: datetime, until: datetime) -> datetime | None:
    """The latest fire time in (after, until], in `tz`, or None; found backwards, so a long outage costs as
    little as a short one."""
    # cronsim goes back strictly before its start; the second added makes `until` itself count.
    start = until.astimezone(tz).replace(microsecond=0) + timedelta(seconds=1)
    for local in CronSim(normalize(expr), start, reverse=True):
        if local <= after:
            return None
        if not _second_occurrence(local):
            return local
    return None
