"""The tick's time in a schedule's parameters."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from nbrelay.schedules.tick_values import TICK_NAMES, check_placeholders, render_parameters, tick_values

TICK = datetime(2026, 12, 4, 9, 5, tzinfo=ZoneInfo("Europe/Berlin"))


def test_every_documented_name_has_a_value() -> None:
    assert tick_values(TICK) == {
        "tick_date": "2026-12-04",
        "tick_time": "09:05",
        "tick_datetime": "2026-12-04 09:05",
        "tick_iso": "2026-12-04T09:05:00+01:00",
        "tick_timestamp": str(int(TICK.timestamp())),
        "tick_weekday": "Friday",
    }
    assert set(tick_values(TICK)) == set(TICK_NAMES)


def test_placeholders_become_the_ticks_time_in_strings_at_any_depth() -> None:
    parameters = {
        "day": "{{ tick_date }}",
        "title": "Report of {{tick_date}} ({{  tick_weekday }})",
        "paths": ["out/{{ tick_date }}.csv", 3],
        "opts": {"since": "{{ tick_iso }}"},
        "n": 7,
        "literal": "{ tick_date }",
    }
    assert render_parameters(parameters, TICK) == {
        "day": "2026-12-04",
        "title": "Report of 2026-12-04 (Friday)",
        "paths": ["out/2026-12-04.csv", 3],
        "opts": {"since": "2026-12-04T09:05:00+01:00"},
        "n": 7,
        "literal": "{ tick_date }",
    }
    assert parameters["day"] == "{{ tick_date }}"  # the schedule's own parameters are left as they are


def test_unknown_placeholders_are_named() -> None:
    problems = check_placeholders({"a": "{{ tick_date }}", "b": ["{{ tick_month }}"], "c": {"d": "{{ today }}"}})
    assert [p["parameter"] for p in problems] == ["b[0]", "c.d"]
    assert "unknown placeholder {{ tick_month }}" in problems[0]["problem"]
    assert check_placeholders({"a": "{{ tick_date }} {{ tick_time }}"}) == []


def test_parameters_nested_too_deep_are_refused_not_walked() -> None:
    deep: object = "{{ tick_date }}"
    for _ in range(5000):
        deep = [deep]
    (problem,) = check_placeholders({"deep": deep, "fine": [[["{{ tick_time }}"]]]})
    assert problem["parameter"] == "deep" and "nested deeper than 64 levels" in problem["problem"]
