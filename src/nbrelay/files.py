"""The workspace: resolving user-supplied paths safely, and writing files atomically (temp name, then rename)."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from urllib.parse import unquote

from nbrelay.config import Settings
from nbrelay.errors import NotFound, PathRefused

MAX_NAME_BYTES = 255
MAX_PATH_BYTES = 4096
_DRIVE = re.compile(r"^[A-Za-z]:")


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
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
