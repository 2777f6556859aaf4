"""The workspace: resolving user-supplied paths safely, reading only regular files, and writing files atomically
(temp name, then rename)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from nbrelay.config import Settings
from nbrelay.errors import NotFound, PathRefused, Unprocessable

log = logging.getLogger(__name__)

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")
# Temporary files are named by the service, not after their target: ".report.html.k3j9x_2a.tmp" for a target of
# 250 bytes passed the file system's 255 (found from outside: such names could be renamed to, never uploaded).
TEMP_PREFIX = ".nbrelay-"
# What a crash can leave: this service's temporary files, and those of versions that named them after the target.
_LEFTOVER = re.compile(r"^\.nbrelay-[a-z0-9_]{8}\.(upload|tmp)$|^\..+\.[a-z0-9_]{8}\.upload$")


def temp_file(folder: Path, suffix: str) -> tuple[int, Path]:
    """A new temporary file in `folder`, hidden from listings, with a short name of the service's own."""
    fd, name = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=suffix)
    return fd, Path(name)


def open_regular(path: Path, shown: str) -> BinaryIO:
    """`path` opened for reading when it is a regular file. A named pipe, socket or device is refused at once:
    reading a pipe that no one writes to waits for ever (found from outside: eight such reads held every thread
    of the server's pool, and listings and submissions with them)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a pipe opens without waiting for a writer
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unprocessable(
                f"{shown} is not a regular file (a named pipe, socket or device): it is not read", code="not_a_file"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, shown: str) -> bytes:
    """The bytes of the regular file at `path` (open_regular)."""
    with open_regular(path, shown) as source:
        return source.read()


def sweep_leftovers(root: Path, *, older_than_s: float) -> int:
    """Delete the temporary files of uploads and writes that a crash cut off, untouched for `older_than_s` (a
    live upload writes to its file all along); how many. Listings hide them, yet they made their folders "not
    empty" for good."""
    removed = 0
    cutoff = time.time() - older_than_s
    for folder, _dirs, names in os.walk(root):
        for name in names:
            if not _LEFTOVER.match(name):
                continue
            path = Path(folder, name)
            with contextlib.suppress(OSError):
                info = path.lstat()
                if stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff:
                    path.unlink()
                    removed += 1
    if removed:
        log.info("removed %d temporary file(s) left by uploads or writes that were cut off", removed)
    return removed


def atomic_write(path: Path, data: bytes | BinaryIO, *, mode: int = 0o644) -> None:
    """Write `data` (bytes, or a file read a block at a time: never held whole in memory) to `path` so that
    readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_file(path.parent, ".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            if hasattr(data, "read"):
                shutil.copyfileobj(data, out, 1 << 20)
            else:
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class Workspace:
    """A folder that user paths are confined to."""

    def __init__(self, root: Path):
        self.root = root.resolve()

    def relative(self, path: Path) -> str:
        return path.resolve().relative_to(self.root).as_posix()

    def lexical(self, path: Path) -> str:
        """`path` relative to the root as the user named it (symlinks not followed)."""
        return path.relative_to(self.root).as_posix()

    def resolve(self, user_path: str, *, must_exist: bool = False, link_itself: bool = False) -> Path:
        """The absolute path for `user_path` inside the workspace, or PathRefused/NotFound.

        Refused: absolute paths, `..`, backslashes, NUL and control characters, percent-encoded forms
        (decoded repeatedly, so double encoding is caught), over-long names, and symlinks leading outside.
        `link_itself`: where the path names a symlink, the link is what is asked for (to delete it),
        so only the folder it lies in must be inside; where it leads does not matter.
        """
        if not isinstance(user_path, str) or not user_path.strip():
            raise PathRefused("a path is required", code="path_required")
        decoded = user_path
        for _ in range(4):  # refuse anything that still changes when decoded again
            again = unquote(decoded)
            if again == decoded:
                break
            decoded = again
        if decoded != user_path:
            raise PathRefused(f"percent-encoded paths are not accepted: {user_path!r}")
        if any(ord(c) < 32 or c == "\x7f" for c in user_path):
            raise PathRefused("control characters are not allowed in paths")
        if "\\" in user_path:
            raise PathRefused(f"backslashes are not allowed in paths: {user_path!r}", hint="use '/' between folders")
        if user_path.startswith("/") or _DRIVE.match(user_path):
            raise PathRefused(f"absolute paths are not accepted: {user_path!r}", hint="give a path in the workspace")
        parts = [p for p in user_path.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise PathRefused(f"'..' is not allowed in paths: {user_path!r}")
        if len(user_path.encode()) > MAX_PATH_BYTES or any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
            raise PathRefused("path or file name too long")
        # No Unicode normalisation: Linux names are bytes, and a file saved in NFD (as macOS does) must be
        # found by the name it has.
        joined = "/".join(parts)
        candidate = self.root.joinpath(joined) if joined else self.root
        if link_itself and candidate.is_symlink():
            real = Path(os.path.realpath(candidate.parent)) / candidate.name
        else:
            real = Path(os.path.realpath(candidate))
        if real != self.root and self.root not in real.parents:
            raise PathRefused(f"{user_path!r} leads outside the workspace", code="path_outside_workspace")
        if must_exist and not real.exists():
            raise NotFound(f"nothing at {user_path!r} in the workspace", code="file_not_found")
        return candidate


def change_stream(settings: Settings, rel: str) -> str:
    """Who hears of a change to the workspace path `rel`: the owner of a home folder, or everyone."""
    parts = rel.split("/")
    if settings.per_user_folders and len(parts) >= 2 and parts[0] == settings.home_dir:
        return f"user:{parts[1]}"
    return "broadcast" if settings.per_user_folders else f"user:{settings.local_user}"


class Areas:
    """The parts of the workspace one user may use: everything (auth mode none, admins), or their home folder
    (`users/<name>`) and the shared folder. Paths stay workspace-relative for everyone; only access differs.
    """

    def __init__(self, prefixes: list[str] | None):
        self.prefixes = prefixes  # None: the whole workspace

    @classmethod
    def for_user(cls, settings: Settings, name: str, *, admin: bool) -> Areas:
        if admin or not settings.per_user_folders:
            return cls(None)
        return cls([f"{settings.home_dir}/{name}", settings.shared_dir])

    def can_see(self, rel: str) -> bool:
        """Inside an area, or a folder on the way to one (so it can be listed)."""
        if self.prefixes is None or rel == "":
            return True
        return any(rel == p or rel.startswith(p + "/") or p.startswith(rel + "/") for p in self.prefixes)

    def can_change(self, rel: str) -> bool:
        """Strictly inside an area: the areas themselves (and the root) are not renamed or deleted."""
        if self.prefixes is None:
            return rel != ""
        return any(rel.startswith(p + "/") for p in self.prefixes)

    def can_read(self, rel: str) -> bool:
        return self.prefixes is None or any(rel == p or rel.startswith(p + "/") for p in self.prefixes)
