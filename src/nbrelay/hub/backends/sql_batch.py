"""Group commit for the sql:// hub, the part without I/O: what one transaction writes for a batch of publishes
(how many offsets each stream takes, the rows, the positioned events, the trims), and its SQL. sql.py runs it on
PostgreSQL (psycopg, async); SQLite's writer (sqlite_writer.py) shares the trims and the time format."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nbrelay.models import Event

TRIM_EVERY = 64  # trim a stream's history to history_size once per this many events
EXPIRE_EVERY_S = 60.0  # delete the events older than history_ttl_s once per this long


@dataclass(slots=True, eq=False)
class Publish:
    """One publish waiting for its transaction: the event, its streams, its data as JSON text, its answer."""

    event: Event
    streams: tuple[str, ...]
    data_json: str  # models.compact_json of the event's data, once for all its streams (read back with json.loads)
    done: asyncio.Future[list[Event]]

    def answer(self, events: list[Event] | None = None, error: BaseException | None = None) -> None:
        if self.done.done():  # its publisher was cancelled: the events stay written all the same
            return
        if error is not None:
            self.done.set_exception(error)
        else:
            self.done.set_result(events or [])


def offsets_needed(batch: list[Publish]) -> dict[str, int]:
    """How many offsets each stream takes in this batch."""
    counts: dict[str, int] = {}
    for item in batch:
        for stream in item.streams:
            counts[stream] = counts.get(stream, 0) + 1
    return counts


def place(
    batch: list[Publish], last: dict[str, tuple[str, int]], column_ts: Callable[[datetime], Any]
) -> tuple[list[tuple[Any, ...]], list[list[Event]]]:
    """Offsets in publish order, per stream, after each stream's `last` (epoch, new last offset, as the reserve
    answered it): the rows to insert and the positioned events, one list per publish."""
    counts = offsets_needed(batch)
    taken = {stream: (epoch, offset - counts[stream]) for stream, (epoch, offset) in last.items()}
    rows: list[tuple[Any, ...]] = []
    placed: list[list[Event]] = []
    for item in batch:
        ts = column_ts(item.event.ts)
        events = []
        for stream in item.streams:
            epoch, offset = taken[stream]
            offset += 1
            taken[stream] = (epoch, offset)
            rows.append((stream, offset, item.event.type, item.data_json, ts))
            events.append(item.event.positioned(stream, offset, epoch))
        placed.append(events)
    return rows, placed


def trims(batch_counts: dict[str, int], last: dict[str, tuple[str, int]], history_size: int) -> list[tuple[str, int]]:
    """(stream, delete up to this offset) for the streams whose last offset crossed a multiple of TRIM_EVERY."""
    due = []
    for stream, count in batch_counts.items():
        offset = last[stream][1]
        if offset > history_size and offset // TRIM_EVERY != (offset - count) // TRIM_EVERY:
            due.append((stream, offset - history_size))
    return due


def sqlite_ts(ts: datetime) -> str:
    """A time as SQLAlchemy's SQLite DateTime stores it (UTC, no zone): history reads it back, and the TTL's cutoff
    compares with it as text in the same format."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class Statements:
    """The batch's SQL in the driver's parameter style, run without SQLAlchemy's compiler: sqlite3 keeps its
    statements prepared (its statement cache), psycopg prepares a query once it has run a few times."""

    def __init__(self, *, postgres: bool):
        p = "%s" if postgres else "?"
        # PostgreSQL: takes the stream's next offsets and locks its row until the commit: writers of other
        # processes queue up behind it. (SQLite's writer hands offsets out from memory under its journal's lock.)
        self.reserve = (
            f"UPDATE hub_streams SET last_offset = last_offset + {p} WHERE name = {p} RETURNING epoch, last_offset"
        )
        self.create = (
            f"INSERT INTO hub_streams (name, epoch, last_offset) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (name) DO NOTHING RETURNING last_offset"
        )
        data = f"{p}::json" if postgres else p
        self.insert = f'INSERT INTO hub_events (stream, "offset", type, data, ts) VALUES ({p}, {p}, {p}, {data}, {p})'
        self.trim = f'DELETE FROM hub_events WHERE stream = {p} AND "offset" <= {p}'
        self.position = f"SELECT epoch, last_offset FROM hub_streams WHERE name = {p}"
        self.expire = f"DELETE FROM hub_events WHERE ts < {p}"
