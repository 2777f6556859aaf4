"""Placing files for post-run steps: copies through a temporary name, moves and renames that never replace a file
they were not told to."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path

from nbrelay.files import temp_file

# link() is not everywhere: without hard links, fall back to check-then-rename.
_NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV, errno.ENOSYS}


class StepFailed(Exception):
    """A step, or one file of it, could not be done; the message is for people."""


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


def copy(src: Path, dest: Path, dest_rel: str, *, overwrite: bool) -> None:
    """Copy through a temporary file in the destination folder: the destination is never half-written."""
    _prepare(dest, dest_rel, overwrite)
    fd, tmp = temp_file(dest.parent, ".tmp")
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as data:
            shutil.copyfileobj(data, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        shutil.copymode(src, tmp)
        _place(tmp, dest, dest_rel, overwrite)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def move(src: Path, dest: Path, dest_rel: str, *, overwrite: bool) -> None:
    _prepare(dest, dest_rel, overwrite)
    try:
        _place(src, dest, dest_rel, overwrite)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        copy(src, dest, dest_rel, overwrite=overwrite)  # another file system: copy, then remove the original
        os.unlink(src)
