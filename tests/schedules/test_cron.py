"""Fire times of cron expressions in a time zone, across DST changes (pure functions, no clock)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nbrelay.schedules.cron import NAMES, CronError, latest_tick, next_runs, normalize, zone

BERLIN = zone("Europe/Berlin")


def local(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold)  # type: ignore[misc]


def iso(times: list[datetime]) -> list[str]:
    return [t.isoformat() for t in times]


def test_weekdays_at_nine_in_berlin_across_spring_forward() -> None:
    # 2026-03-29 (Sunday) 02:00 CET -> 03:00 CEST: 09:00 stays 09:00 local, 08:00Z before and 07:00Z after.
    runs = next_runs("0 9 * * MON-FRI", BERLIN, local(2026, 3, 26, 12), 5)
    assert iso(runs) == [
        "2026-03-27T09:00:00+01:00",
        "2026-03-30T09:00:00+02:00",
        "2026-03-31T09:00:00+02:00",
        "2026-04-01T09:00:00+02:00",
        "2026-04-02T09:00:00+02:00",
    ]
    assert [t.astimezone(UTC).hour for t in runs] == [8, 7, 7, 7, 7]


def test_weekdays_at_nine_in_berlin_across_fall_back() -> None:
    # 2026-10-25 (Sunday) 03:00 CEST -> 02:00 CET.
    runs = next_runs("0 9 * * MON-FRI", BERLIN, local(2026, 10, 22, 12), 4)
    assert iso(runs) == [
        "2026-10-23T09:00:00+02:00",
        "2026-10-26T09:00:00+01:00",
        "2026-10-27T09:00:00+01:00",
        "2026-10-28T09:00:00+01:00",
    ]
    assert [t.astimezone(UTC).hour for t in runs] == [7, 8, 8, 8]


def test_a_time_that_does_not_exist_runs_once_at_the_next_valid_time() -> None:
    runs = next_runs("30 2 * * *", BERLIN, local(2026, 3, 28, 12), 2)
    assert iso(runs) == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
    # An imaginary hour moved onto a real tick of the same expression is one run, not two.
    assert iso(next_runs("0 2,3 * * *", BERLIN, local(2026, 3, 29, 0), 2)) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:00:00+02:00",
    ]
    assert iso(next_runs("*/30 * * * *", BERLIN, local(2026, 3, 29, 1, 15), 3)) == [
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_a_repeated_time_runs_once_at_its_first_occurrence() -> None:
    assert iso(next_runs("30 2 * * *", BERLIN, local(2026, 10, 24, 12), 2)) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]
    # cronsim gives wildcard expressions both passes of the repeated hour; the second is dropped.
    assert iso(next_runs("*/30 * * * *", BERLIN, local(2026, 10, 25, 1, 45), 4)) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]
    # Starting inside the second pass does not bring it back.
    second_pass = local(2026, 10, 25, 2, 10, fold=1)
    assert iso(next_runs("*/30 * * * *", BERLIN, second_pass, 1)) == ["2026-10-25T03:00:00+01:00"]


def test_latest_tick_agrees_with_the_forward_list() -> None:
    for expr in ("30 2 * * *", "*/30 * * * *", "0 9 * * MON-FRI", "@hourly"):
        start = local(2026, 3, 27)
        forward = list(next_runs(expr, BERLIN, start, 60))
        for i, tick in enumerate(forward[1:], 1):
            assert latest_tick(expr, BERLIN, start, tick) == tick
            assert latest_tick(expr, BERLIN, start, tick.replace(second=59)) == tick
            assert latest_tick(expr, BERLIN, forward[i - 1], tick) == tick
        assert latest_tick(expr, BERLIN, forward[0], forward[0]) is None
    # In the second pass of the repeated hour, the latest tick is still the first pass's.
    until = local(2026, 10, 25, 2, 40, fold=1)
    assert latest_tick("*/30 * * * *", BERLIN, local(2026, 10, 25), until) == local(2026, 10, 25, 2, 30)


def test_latest_tick_after_a_long_outage_costs_one_step() -> None:
    assert latest_tick("@yearly", BERLIN, local(2001, 6, 1), local(2026, 6, 1)) == local(2026, 1, 1)
    assert latest_tick("* * * * *", BERLIN, local(2000, 1, 1), local(2026, 6, 1, 12, 0, 30)) == local(2026, 6, 1, 12)


@pytest.mark.parametrize(("name", "fields"), sorted(NAMES.items()))
def test_names_are_their_five_fields(name: str, fields: str) -> None:
    assert normalize(name) == fields
    assert normalize(name.upper()) == fields


def test_normalize_keeps_five_fields() -> None:
    assert normalize("  0  9 * *   MON-FRI ") == "0 9 * * MON-FRI"


@pytest.mark.parametrize(
    ("expr", "says"),
    [
        ("* * *", "has 3 fields; expected 5"),
        ("0 0 * * * *", "has 6 fields; expected 5"),
        ("61 * * * *", "Bad minute"),
        ("0 25 * * *", "Bad hour"),
        ("0 0 31 2 *", "Bad day-of-month"),
        ("0 0 * * FUNDAY", "Bad day-of-week"),
        ("@reboot", "unknown cron name '@reboot'"),
        ("", "has 0 fields"),
    ],
)
def test_bad_expressions_say_what_is_wrong(expr: str, says: str) -> None:
    with pytest.raises(CronError, match=says) as caught:
        normalize(expr)
    assert caught.value.field == "cron"


@pytest.mark.parametrize("name", ["Mars/Olympus", "", " UTC", "../etc/passwd", "/etc/localtime"])
def test_unknown_zones_are_refused(name: str) -> None:
    with pytest.raises(CronError, match="unknown time zone") as caught:
        zone(name)
    assert caught.value.field == "timezone"
