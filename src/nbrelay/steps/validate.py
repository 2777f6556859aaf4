"""Checking post-run steps before a job is queued (no I/O): the schema, the path rules, the templates' fields."""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from nbrelay.errors import NbrelayError, Unprocessable
from nbrelay.files import MAX_PATH_BYTES, read_regular
from nbrelay.steps.templates import BUILTIN_FIELDS, render

MAX_STEPS = 20
ACTIONS = ("copy", "move", "delete")
WHENS = ("success", "always")
ARTIFACTS = ("report", "notebook")  # sources that are the job's own files, not workspace globs
STEP_KEYS = ("action", "source", "to", "when", "overwrite")

_FORMATTER = string.Formatter()
_DRIVE = re.compile(r"^[A-Za-z]:")


def _invalid(message: str) -> Unprocessable:
    return Unprocessable(
        message,
        code="invalid_steps",
        hint='a step is {"action": "copy|move|delete", "source": "report|notebook|<glob>", "to": "<path>", '
        '"when": "success|always", "overwrite": false}',
    )


def notebook_steps(nb: Any) -> Any:
    """The default steps of a notebook (its JSON), `metadata.nbrelay.steps`, or None when it has none."""
    metadata = nb.get("metadata") if isinstance(nb, Mapping) else None
    section = metadata.get("nbrelay") if isinstance(metadata, Mapping) else None
    return section.get("steps") if isinstance(section, Mapping) else None


def read_notebook_steps(path: Path) -> Any:
    """`notebook_steps` of the notebook file at `path` (already checked to be one); None if it cannot be read."""
    try:
        return notebook_steps(json.loads(read_regular(path, path.name)))
    except (OSError, ValueError, NbrelayError):
        return None


def validate_steps(raw: Any, *, parameters: Iterable[str] = (), origin: str = "steps") -> list[dict[str, Any]]:
    """`raw` checked and normalised (defaults filled in), or Unprocessable saying what is wrong and where.

    `parameters` are the names the job has values for: the only parameter fields templates may use.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _invalid(f"{origin} must be a list of steps, not {type(raw).__name__}")
    if len(raw) > MAX_STEPS:
        raise _invalid(f"{origin} has {len(raw)} steps; at most {MAX_STEPS} are allowed")
    params = sorted(set(parameters) - set(BUILTIN_FIELDS))
    return [_validate_step(step, f"{origin}[{i}]", params) for i, step in enumerate(raw)]


def _validate_step(step: Any, where: str, params: list[str]) -> dict[str, Any]:
    if not isinstance(step, dict):
        raise _invalid(f"{where} must be an object with action, source and (for copy and move) to")
    unknown = sorted(str(k) for k in step if k not in STEP_KEYS)
    if unknown:
        raise _invalid(f"{where}: unknown key {', '.join(map(repr, unknown))}; a step has {', '.join(STEP_KEYS)}")

    action = step.get("action")
    if action is None:
        raise _invalid(f"{where}: action is required: copy, move or delete")
    if action not in ACTIONS:
        raise _invalid(f"{where}: unknown action {action!r}; use copy, move or delete")

    source = step.get("source")
    if not isinstance(source, str) or not source.strip():
        raise _invalid(f"{where}: source is required: report, notebook or a glob of workspace files")
    if source in ARTIFACTS:
        if action != "copy":
            raise _invalid(
                f"{where}: the job's {source} cannot be {'moved' if action == 'move' else 'deleted'}: "
                "the report history keeps it; copy it instead"
            )
    else:
        _check_relative(source, f"{where}: source")

    when = step.get("when", "success")
    if when not in WHENS:
        raise _invalid(f"{where}: unknown when {when!r}; use success or always")

    normal: dict[str, Any] = {"action": action, "source": source}
    if action == "delete":
        if "to" in step:
            raise _invalid(f"{where}: delete takes no 'to'")
        if "overwrite" in step:
            raise _invalid(f"{where}: overwrite applies to copy and move only")
        normal["when"] = when
        return normal

    to = step.get("to")
    if to is None:
        raise _invalid(f"{where}: {action} needs 'to', the destination path in the workspace")
    if not isinstance(to, str) or not to.strip():
        raise _invalid(f"{where}: 'to' must be a non-empty path template")
    _check_template(to, f"{where}: to", params)
    overwrite = step.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise _invalid(f"{where}: overwrite must be true or false, not {overwrite!r}")
    normal.update(to=to, when=when, overwrite=overwrite)
    return normal


def _check_template(template: str, where: str, params: list[str]) -> None:
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise _invalid(
            f"{where} {template!r} is not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        ) from None
    known = set(BUILTIN_FIELDS) | set(params)
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "":
            raise _invalid(f"{where} {template!r} has an empty field {{}}; name one, such as {{notebook}}")
        if conversion or spec:
            raise _invalid(f"{where} {template!r}: field {{{name}}} may not have a conversion or format spec")
        if name not in known:
            choices = ", ".join("{" + f + "}" for f in BUILTIN_FIELDS)
            given = ", ".join("{" + p + "}" for p in params) or "none"
            raise _invalid(
                f"{where} {template!r} has unknown field {{{name}}}; fields: {choices}; parameters of this job: {given}"
            )
    # The fixed parts must already be a workspace path: "/x/{job}" or "{notebook_dir}/../x" is refused now.
    sample = render(template, {**{f: "x" for f in known}, "notebook_dir": "."})
    _check_relative(sample, f"{where} {template!r}")


def _check_relative(path: str, what: str) -> None:
    """The static rules of `Workspace.resolve`, for globs and templates before there is anything to resolve."""
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        raise _invalid(f"{what}: control characters (NUL included) are not allowed")
    if "\\" in path:
        raise _invalid(f"{what}: backslashes are not allowed; use '/' between folders")
    if path.startswith("/") or _DRIVE.match(path):
        raise _invalid(f"{what}: absolute paths are not accepted; give a path in the workspace")
    if any(part == ".." for part in path.split("/")):
        raise _invalid(f"{what}: '..' is not allowed")
    if unquote(path) != path:
        raise _invalid(f"{what}: percent-encoded paths are not accepted")
    if len(path.encode()) > MAX_PATH_BYTES:
        raise _invalid(f"{what}: too long")
    if not [p for p in path.split("/") if p not in ("", ".")]:
        raise _invalid(f"{what}: names no file")
