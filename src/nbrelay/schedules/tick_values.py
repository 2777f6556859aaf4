"""The tick's time in a schedule's parameters: `{{ tick_date }}` in a string value becomes the tick's date.

Pure functions. The values are the tick's time in the schedule's time zone (TICK_NAMES documents each).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

__all__ = ["TICK_NAMES", "check_placeholders", "render_parameters", "tick_values"]

TICK_NAMES = {
    "tick_date": "the date, 2026-12-04",
    "tick_time": "the time, 09:00",
    "tick_datetime": "date and time, 2026-12-04 09:00",
    "tick_iso": "ISO 8601 with offset, 2026-12-04T09:00:00+01:00",
    "tick_timestamp": "seconds since 1970-01-01 UTC, 1796371200",
    "tick_weekday": "the day's English name, Friday",
}
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def tick_values(local: datetime) -> dict[str, str]:
    """Each name of TICK_NAMES for the tick at `local` (aware, in the schedule's time zone)."""
    return {
        "tick_date": local.strftime("%Y-%m-%d"),
        "tick_time": local.strftime("%H:%M"),
        "tick_datetime": local.strftime("%Y-%m-%d %H:%M"),
        "tick_iso": local.isoformat(timespec="seconds"),
        "tick_timestamp": str(int(local.timestamp())),
        "tick_weekday": local.strftime("%A"),
    }


MAX_DEPTH = 64  # parameters nested deeper are refused (and never walked by recursion that deep)


class _TooDeep(Exception):
    def __init__(self, path: str):
        self.path = path


def _placeholders(value: Any, path: str, depth: int = 0) -> list[tuple[str, str]]:
    if depth > MAX_DEPTH:
        raise _TooDeep(path)
    if isinstance(value, str):
        return [(path, name) for name in _PLACEHOLDER.findall(value)]
    if isinstance(value, dict):
        return [found for key, item in value.items() for found in _placeholders(item, f"{path}.{key}", depth + 1)]
    if isinstance(value, list):
        return [found for i, item in enumerate(value) for found in _placeholders(item, f"{path}[{i}]", depth + 1)]
    return []


def check_placeholders(parameters: dict[str, Any]) -> list[dict[str, str]]:
    """The problems with the {{ … }} placeholders in `parameters` (unknown names, values nested over MAX_DEPTH
    levels), for a 422; [] when none."""
    problems = []
    for key, value in parameters.items():
        try:
            found = _placeholders(value, key)
        except _TooDeep as exc:
            problems.append({"parameter": key, "problem": f"nested deeper than {MAX_DEPTH} levels at {exc.path[:200]}"})
            continue
        problems += [
            {"parameter": path, "problem": f"unknown placeholder {{{{ {name} }}}}; use one of {', '.join(TICK_NAMES)}"}
            for path, name in found
            if name not in TICK_NAMES
        ]
    return problems


def _render(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), value)
    if isinstance(value, dict):
        return {key: _render(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, values) for item in value]
    return value


def render_parameters(parameters: dict[str, Any], local: datetime) -> dict[str, Any]:
    """`parameters` with every {{ tick_… }} in their string values replaced by the tick's time at `local`."""
    rendered: dict[str, Any] = _render(parameters, tick_values(local))
    return rendered
