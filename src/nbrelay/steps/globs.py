"""Workspace globs of post-run steps: files and symlinks that match, never through a symlinked folder."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path

from nbrelay.errors import NbrelayError
from nbrelay.files import Workspace
from nbrelay.steps.writing import StepFailed

MAX_MATCHES = 10_000  # files one glob may select


def glob(
    workspace: Workspace, pattern: str, errors: list[str], can_read: Callable[[str], bool]
) -> list[tuple[str, Path]]:
    """Files and symlinks matching `pattern` in the workspace, as sorted (workspace path, path) pairs.

    Symlinked folders are never entered, so every match lives inside the workspace; each match's folder is
    checked with `Workspace.resolve` all the same. Files outside the owner's areas are not seen at all.
    """
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
        if not can_read(rel):
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
