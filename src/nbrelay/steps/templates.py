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


def fill_fields(steps: list[dict[str, Any]], values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Validated `steps` with the fields named in `values` written in as their (safe) text, the others kept: the
    notebook's defaults of parameters a job was not given, fixed when it is submitted (the job keeps only the
    parameters given, which is all a template finds when the job ends)."""
    if not values:
        return steps

    def filled(template: str) -> str:
        out: list[str] = []
        for literal, name, _spec, _conversion in _FORMATTER.parse(template):
            out.append(literal.replace("{", "{{").replace("}", "}}"))
            if name is not None:
                text = safe_value(values[name]) if name in values and name not in BUILTIN_FIELDS else None
                out.append("{" + name + "}" if text is None else text.replace("{", "{{").replace("}", "}}"))
        return "".join(out)

    return [{**step, "to": filled(step["to"])} if isinstance(step.get("to"), str) else step for step in steps]
