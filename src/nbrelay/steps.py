"""Post-run file steps: copy, move or delete files when a job finishes.

A job carries up to 20 steps, from the submit request (`steps`) or, when the request has no `steps`, from the
notebook's metadata (`metadata.nbrelay.steps`, same schema); `"steps": []` disables the notebook's steps.

A step::

    {"action": "copy" | "move" | "delete",
     "source": "report" | "notebook" | "<glob relative to the workspace>",
     "to": "<destination path template>",        # copy and move only
     "when": "success" | "always",              # default "success"
     "overwrite": false}                        # copy and move only; default false

- `source` "report" is the job's HTML report and "notebook" the executed .ipynb; both live in the data dir, where
  the report history keeps them, so they can be copied but not moved or deleted. Anything else is a glob of
  workspace files ("scratch/*.csv", "out/**/*.tmp"; `**` is any number of folders, a trailing `**` every file
  below). Globs never enter symlinked folders and match files and symlinks, never folders. To name a workspace
  file called "report" or "notebook", write "./report".
- `to` is a workspace path with fields: {notebook} (file name without .ipynb), {notebook_dir} (its folder,
  "." at the top), {date} (YYYY-MM-DD) and {time} (HHMMSS) of the finish time in UTC, {job} (id), {state},
  {user}, and the job's own parameters by name (only those the request gave; a field named like a built-in
  means the built-in). Values are str()-ed and "/", "\\" and control characters (NUL included) in them become
  "_", so a value never makes folders; only {notebook_dir} may hold "/". A `to` ending in "/" is a folder: the
  file keeps its name there. Folders are created as needed. Write a literal brace as "{{" or "}}".
- The rendered destination goes through `Workspace.resolve`: one that leaves the workspace (say a parameter
  value ".." in a folder position) fails that file. An existing destination fails it too ("exists") unless
  `overwrite` is true; a folder is never replaced. Copies go to a temporary name in the destination folder
  and are renamed into place, so a destination is either untouched or complete.
- `move` takes regular files (not symlinks) of a glob. `delete` removes regular files and symlinks (the link,
  never its target) whose own location is inside the workspace; folders are never deleted.
- With per-user folders (auth modes token and header) steps stay in the owner's areas: globs see only files in
  them, and everything written, moved or deleted must be in the owner's home or the shared folder.

Execution (`run_steps`): steps run in order when the job has finished and before its final state is saved.
"success" steps are skipped unless the job succeeded. A failing step, or a failing file within a step, does
not stop the rest; each step's result says what happened. Step failures never change the job's state.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import logging
import os
import re
import shutil
import string
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from nbrelay.errors import NbrelayError, Unprocessable
from nbrelay.files import MAX_PATH_BYTES, Areas, Workspace
from nbrelay.models import Job, utcnow

log = logging.getLogger(__name__)

MAX_STEPS = 20
MAX_MATCHES = 10_000  # files one glob may select
MAX_ERRORS_SHOWN = 5
ACTIONS = ("copy", "move", "delete")
WHENS = ("success", "always")
ARTIFACTS = ("report", "notebook")  # sources that are the job's own files, not workspace globs
STEP_KEYS = ("action", "source", "to", "when", "overwrite")
BUILTIN_FIELDS = ("notebook", "notebook_dir", "date", "time", "job", "state", "user")

_FORMATTER = string.Formatter()
_DRIVE = re.compile(r"^[A-Za-z]:")
_UNSAFE_IN_VALUE = re.compile(r"[/\\\x00-\x1f\x7f]")
# link() is not everywhere: without hard links, fall back to check-then-rename.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV, errno.ENOSYS}


class StepFailed(Exception):
    """A step, or one file of it, could not be done; the message is for people."""


class _Skip(Exception):
    """Nothing to do for this step, and nothing wrong (e.g. the job wrote no report)."""


# validation (no I/O) ---------------------------------------------------------------------------------------------
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
        return notebook_steps(json.loads(path.read_bytes()))
    except (OSError, ValueError):
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


# templates -------------------------------------------------------------------------------------------------------
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


# execution (I/O) -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    workspace: Workspace
    values: dict[str, str]
    report_path: Path | None
    output_path: Path | None
    areas: Areas | None

    def rel(self, path: Path) -> str:
        return path.relative_to(self.workspace.root).as_posix()

    def can_read(self, rel: str) -> bool:
        return self.areas is None or self.areas.can_read(rel)

    def check_may_change(self, rel: str) -> None:
        if self.areas is not None and not self.areas.can_change(rel):
            raise StepFailed(f"{rel} is not in a folder the job's owner may change")


def run_steps(
    steps: list[dict[str, Any]],
    *,
    job: Job,
    workspace: Workspace,
    report_path: Path | None,
    output_path: Path | None,
    succeeded: bool,
    areas: Areas | None = None,
) -> list[dict[str, Any]]:
    """Run a finished job's validated steps in order; one result per step, never an exception for a step.

    `report_path` and `output_path` are the job's report and executed notebook, None when it wrote none.
    `areas`, when given, confines the steps to the owner's areas: globs only see files the owner may read, and
    every path a step writes, moves or deletes must be one the owner may change. Blocking: call it in a thread.
    """
    ctx = _Context(workspace, template_values(job), report_path, output_path, areas)
    results: list[dict[str, Any]] = []
    for i, step in enumerate(steps):
        result: dict[str, Any] = {"step": i, "action": step.get("action"), "source": step.get("source")}
        if "to" in step:
            result["to"] = step["to"]
        if step.get("when", "success") == "success" and not succeeded:
            results.append({**result, "status": "skipped", "files": [], "reason": "the job did not succeed"})
            continue
        files: list[str] = []
        errors: list[str] = []
        try:
            _run_step(step, ctx, files, errors)
        except _Skip as skip:
            results.append({**result, "status": "skipped", "files": [], "reason": str(skip)})
            continue
        except (StepFailed, NbrelayError) as exc:
            errors.append(str(exc))
        except Exception as exc:  # a step must never take the job's final state down with it
            log.exception("step %s of job %s", i, job.id)
            errors.append(f"unexpected error: {exc}")
        result.update(status="failed" if errors else "done", files=files)
        if errors:
            shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
            more = len(errors) - MAX_ERRORS_SHOWN
            result["error"] = shown + (f"; and {more} more" if more > 0 else "")
        results.append(result)
    return results


def _run_step(step: dict[str, Any], ctx: _Context, files: list[str], errors: list[str]) -> None:
    action, source = step["action"], step["source"]
    sources = _artifact(source, ctx) if source in ARTIFACTS else _glob(ctx, source, errors)
    taken: set[str] = set()
    for label, path in sources:
        try:
            if action == "delete":
                ctx.check_may_change(label)
                with contextlib.suppress(FileNotFoundError):  # gone meanwhile: nothing to delete
                    os.unlink(path)  # a symlink: the link goes, its target stays
                    files.append(label)
                continue
            dest, dest_rel = _destination(step["to"], path.name, ctx)
            if dest_rel in taken:
                raise StepFailed(f"another file of this step already went to {dest_rel}")
            taken.add(dest_rel)
            ctx.check_may_change(dest_rel)
            if action == "copy":
                real = path if source in ARTIFACTS else _readable_target(label, ctx)
                if not real.is_file():
                    raise StepFailed("not a regular file")
                _copy(real, dest, dest_rel, overwrite=step["overwrite"])
            else:
                ctx.check_may_change(label)
                if path.is_symlink():
                    raise StepFailed("is a symlink; move takes regular files only")
                _move(path, dest, dest_rel, overwrite=step["overwrite"])
            files.append(dest_rel)
        except (StepFailed, NbrelayError) as exc:
            errors.append(f"{label}: {exc}")
        except OSError as exc:
            errors.append(f"{label}: {exc.strerror or exc}")


def _readable_target(label: str, ctx: _Context) -> Path:
    """The file a glob match stands for: itself, or a symlink's target, which must be inside the workspace (and
    in the owner's areas)."""
    path = ctx.workspace.resolve(label)
    if path.is_symlink() and not ctx.can_read(ctx.rel(Path(os.path.realpath(path)))):
        raise StepFailed("is a symlink to a file the job's owner may not read")
    return path


def _artifact(source: str, ctx: _Context) -> list[tuple[str, Path]]:
    path = ctx.report_path if source == "report" else ctx.output_path
    if path is None or not path.is_file():
        raise _Skip(f"the job has no {'report' if source == 'report' else 'executed notebook'}")
    return [(source, path)]


def _destination(template: str, name: str, ctx: _Context) -> tuple[Path, str]:
    rendered = render(template, ctx.values)
    if rendered.endswith("/"):
        rendered += name
    try:
        dest = ctx.workspace.resolve(rendered)
    except NbrelayError as exc:
        raise StepFailed(f"destination refused: {exc}") from None
    return dest, ctx.rel(dest)


# globs -----------------------------------------------------------------------------------------------------------
def _glob(ctx: _Context, pattern: str, errors: list[str]) -> list[tuple[str, Path]]:
    """Files and symlinks matching `pattern` in the workspace, as sorted (workspace path, path) pairs.

    Symlinked folders are never entered, so every match lives inside the workspace; each match's folder is
    checked with `Workspace.resolve` all the same. Files outside the owner's areas are not seen at all.
    """
    workspace = ctx.workspace
    segments: list[str] = []
    for part in pattern.split("/"):
        if part in ("", ".") or (part == "**" and segments[-1:] == ["**"]):
            continue
        segments.append(part)
    if segments[-1] == "**":
        segments.append("*")
    found: dict[str, Path] = {}
    _walk(workspace.root, "", segments, found)
    matches: list[tuple[str, Path]] = []
    for rel in sorted(found):
        if not ctx.can_read(rel):
            continue
        parent = rel.rpartition("/")[0]
        try:
            if parent:
                workspace.resolve(parent)
        except NbrelayError as exc:
            errors.append(f"{rel}: {exc}")
            continue
        matches.append((rel, found[rel]))
    return matches


def _walk(folder: Path, rel: str, segments: list[str], found: dict[str, Path]) -> None:
    segment, rest = segments[0], segments[1:]
    entries = _entries(folder)
    if segment == "**":
        _walk(folder, rel, rest, found)
        for entry in entries:
            if _is_real_dir(entry):
                _walk(Path(entry.path), f"{rel}{entry.name}/", segments, found)
        return
    for entry in entries:
        if not fnmatch.fnmatchcase(entry.name, segment):
            continue
        if rest:
            if _is_real_dir(entry):
                _walk(Path(entry.path), f"{rel}{entry.name}/", rest, found)
        elif entry.is_symlink() or entry.is_file(follow_symlinks=False):
            found[f"{rel}{entry.name}"] = Path(entry.path)
            if len(found) > MAX_MATCHES:
                raise StepFailed(f"the source matches more than {MAX_MATCHES} files")


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


# writing ---------------------------------------------------------------------------------------------------------
def _prepare(dest: Path, dest_rel: str, overwrite: bool) -> None:
    if dest.is_dir() and not dest.is_symlink():
        raise StepFailed(f"destination {dest_rel} is a folder")
    if os.path.lexists(dest) and not overwrite:
        raise StepFailed(_exists(dest_rel))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StepFailed(f"cannot create the folder for {dest_rel}: a file is in the way") from None


def _exists(dest_rel: str) -> str:
    return f"destination {dest_rel} exists (set overwrite to true to replace it)"


def _place(path: Path, dest: Path, dest_rel: str, overwrite: bool) -> None:
    """Rename `path` to `dest` atomically; without `overwrite`, never replace a file that appeared meanwhile."""
    if overwrite:
        os.replace(path, dest)
        return
    try:
        os.link(path, dest, follow_symlinks=False)  # fails if dest exists, whenever it came
    except FileExistsError:
        raise StepFailed(_exists(dest_rel)) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if os.path.lexists(dest):
            raise StepFailed(_exists(dest_rel)) from None
        os.replace(path, dest)
    else:
        os.unlink(path)


def _copy(src: Path, dest: Path, dest_rel: str, *, overwrite: bool) -> None:
    """Copy through a temporary file in the destination folder: the destination is never half-written."""
    _prepare(dest, dest_rel, overwrite)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as data:
            shutil.copyfileobj(data, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(src, tmp)
        _place(Path(tmp), dest, dest_rel, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _move(src: Path, dest: Path, dest_rel: str, *, overwrite: bool) -> None:
    _prepare(dest, dest_rel, overwrite)
    try:
        _place(src, dest, dest_rel, overwrite)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy(src, dest, dest_rel, overwrite=overwrite)  # another file system: copy, then remove the original
        os.unlink(src)
