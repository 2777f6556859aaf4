"""Destination templates of post-run steps: the fields a finished job gives them, and filling them in."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from nbrelay.models import Job, utcnow

BUILTIN_FIELDS = ("notebook", "notebook_dir", "date", "time", "job", "state", "user")

_FORMATTER = string.Formatter()
_UNSAFE_IN_VALUE = re.compile(r"[/\\\x00-\x1f\x7f]")


def safe_value(value: Any) -> str:
    """`value` as text that cannot make folders: "/", "\\" and control characters become "_"."""
    return _UNSAFE_IN_VALUE.sub("_", str(value))


def template_values(job: Job) -> dict[str, str]:
    """The fields a destination template may use, for a finished `job`."""
    finished = (job.finished_at or utcnow()).astimezone(UTC)
    folder, _, name = job.notebook.rpartition("/")
    values = {str(k): safe_value(v) for k, v in job.parameters.items()}
    values.update(
        notebook=safe_value(name.removesuffix(".ipynb") or "notebook"),
        notebook_dir=folder or ".",
        date=finished.strftime("%Y-%m-%d"),
        time=finished.strftime("%H%M%S"),
        job=str(job.id),
        state=job.state.value,
        user=safe_value(job.owner),
    )
    return values


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill a validated template's fields from `values` (no attribute or index lookups, unlike str.format)."""
    out: list[str] = []
    for literal, name, _spec, _conversion in _FORMATTER.parse(template):
        out.append(literal)
        if name is not None:
            out.append(values[name])
    return "".join(out)
