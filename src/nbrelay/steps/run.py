"""Running a finished job's validated steps in order, one result per step (blocking: call it in a thread)."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbrelay.errors import NbrelayError
from nbrelay.files import Areas, Workspace
from nbrelay.models import Job
from nbrelay.steps.globs import glob
from nbrelay.steps.templates import render, template_values
from nbrelay.steps.validate import ARTIFACTS
from nbrelay.steps.writing import StepFailed, copy, move

log = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 5


class _Skip(Exception):
    """Nothing to do for this step, and nothing wrong (e.g. the job wrote no report)."""


@dataclass(frozen=True)
class _Context:
    workspace: Workspace
    values: dict[str, str]
    report_path: Path | None
    output_path: Path | None
    areas: Areas | None
    changed: list[dict[str, Any]]

    def note(self, rel: str, action: str, **extra: str) -> None:
        """A change made to the workspace, as a file.changed event tells it."""
        kind = "notebook" if rel.endswith(".ipynb") else "file"
        self.changed.append({"path": rel, "action": action, "type": kind, **extra})

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
    changed: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Run a finished job's validated steps in order; one result per step, never an exception for a step.

    `report_path` and `output_path` are the job's report and executed notebook, None when it wrote none.
    `areas`, when given, confines the steps to the owner's areas: globs only see files the owner may read, and
    every path a step writes, moves or deletes must be one the owner may change. `changed`, when given, gets what
    the steps changed in the workspace, each as the data of its file.changed event. Blocking: call it in a thread.
    """
    ctx = _Context(workspace, template_values(job), report_path, output_path, areas, [] if changed is None else changed)
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
    sources = _artifact(source, ctx) if source in ARTIFACTS else glob(ctx.workspace, source, errors, ctx.can_read)
    taken: set[str] = set()
    for label, path in sources:
        try:
            if action == "delete":
                ctx.check_may_change(label)
                with contextlib.suppress(FileNotFoundError):  # gone meanwhile: nothing to delete
                    os.unlink(path)  # a symlink: the link goes, its target stays
                    files.append(label)
                    ctx.note(label, "deleted")
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
                existed = os.path.lexists(dest)
                copy(real, dest, dest_rel, overwrite=step["overwrite"])
                origin = {} if source in ARTIFACTS else {"copied_from": label}  # the job's report is no workspace file
                ctx.note(dest_rel, "modified" if existed else "created", **origin)
            else:
                ctx.check_may_change(label)
                if path.is_symlink():
                    raise StepFailed("is a symlink; move takes regular files only")
                existed = os.path.lexists(dest)
                move(path, dest, dest_rel, overwrite=step["overwrite"])
                if source in ARTIFACTS:
                    ctx.note(dest_rel, "modified" if existed else "created")
                else:
                    ctx.note(dest_rel, "moved", **{"from": label})
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
