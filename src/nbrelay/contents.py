"""Workspace contents for people and tools, shaped like Jupyter Server's contents API: list, read, upload,
save, rename/move, copy, delete, create folders. Every user path goes through `Workspace.resolve`; every
change is written atomically and announced as a `file.changed` event.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import stat
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nbrelay.config import Settings
from nbrelay.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NbrelayError,
    NotFound,
    PayloadTooLarge,
    Unprocessable,
    disk_refusal,
)
from nbrelay.files import (
    MAX_NAME_BYTES,
    Areas,
    Workspace,
    atomic_write,
    change_stream,
    open_regular,
    read_regular,
    temp_file,
)
from nbrelay.jobs import User
from nbrelay.notebooks import checked

Announce = Callable[[str, dict[str, Any]], Awaitable[None]]
_CHUNK = 1 << 16
# Unicode's explicit direction marks, embeddings, overrides and isolates (bidi controls).
_BIDI_CONTROL = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# Control characters past ASCII's (C1, such as U+0085 NEL) and the line and paragraph separators: mail headers,
# logs and terminals take them for line breaks (found from outside: a notebook named "nel\u0085Bcc: …" never got
# its e-mails).
_LINE_BREAKING = re.compile("[\u0080-\u009f\u2028\u2029]")


@contextlib.contextmanager
def _on_disk(what: str) -> Iterator[None]:
    """What the disk refuses while doing `what` ("delete a.txt") is the request's answer (errors.disk_refusal)."""
    try:
        yield
    except NbrelayError:
        raise
    except OSError as exc:
        raise disk_refusal(exc, what) from None


def _current_path(fd: int) -> Path | None:
    """Where the open file `fd` is now, by its descriptor (Linux): found wherever its folder was moved; None
    when it has no name any more (deleted) or this cannot be told."""
    try:
        now = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    return None if now.endswith(" (deleted)") else Path(now)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _kind(path: Path) -> str:
    if path.is_dir():
        return "directory"
    return _kind_of_name(path.name)


def _kind_of_name(name: str) -> str:
    """What a file (not a folder) of this name is: a notebook or a file."""
    return "notebook" if os.path.splitext(name)[1] == ".ipynb" else "file"


def _shape(name: str, rel: str, kind: str, writable: bool, info: os.stat_result) -> dict[str, Any]:
    """A contents model without its content, as Jupyter Server shapes one."""
    return {
        "name": name,
        "path": rel,
        "type": kind,
        "writable": writable,
        "created": _iso(info.st_ctime),
        "last_modified": _iso(info.st_mtime),
        "size": None if kind == "directory" else info.st_size,
        "mimetype": None,
        "format": None,
        "content": None,
    }


class Contents:
    def __init__(self, settings: Settings, announce: Announce | None = None):
        self.settings = settings
        self.workspace = Workspace(settings.workspace)
        self.announce = announce
        # One change at a time: "does the target exist?" and "write it" must not interleave between clients.
        self._lock = asyncio.Lock()

    def areas(self, user: User) -> Areas:
        return Areas.for_user(self.settings, user.name, admin=user.admin)

    # paths ---------------------------------------------------------------------------------------------------
    def _path(self, user: User, user_path: str, *, write: bool = False, link_itself: bool = False) -> tuple[Path, str]:
        if user_path.strip("/") == "":
            path = self.workspace.root
        else:
            path = self.workspace.resolve(user_path, link_itself=link_itself)
        rel = self.workspace.lexical(path)
        if rel in ("", "."):
            if write:  # the workspace itself ("", "/", ".", "./") is never replaced, renamed or deleted
                raise Forbidden("the workspace root cannot be changed; name a file or folder in it", code="not_yours")
            return self.workspace.root, ""
        areas = self.areas(user)
        if write and not areas.can_change(rel):
            raise Forbidden(f"you may not change {rel}", code="not_yours")

        if not write and not areas.can_see(rel):
            raise NotFound(f"nothing at {rel}", code="file_not_found")
        return path, rel

    @staticmethod
    def _refuse_new_name(path: Path, rel: str) -> None:
        """Names that are not made (what is there already may be replaced, renamed and deleted): one that starts
        with '.', or is inside such a folder, as listings hide it (found from outside: ".x.ipynb" uploaded, was
        then nowhere to be seen, and its second upload asked to replace a file no one could see); one holding a
        character that reverses the text around it, which shows "nul\u202eblah.ipynb" as "nulbynpi.halb" in a
        listing, a toast and a download name (an extension spoofed in a shared folder)."""
        if os.path.lexists(path):
            return
        if any(part.startswith(".") for part in rel.split("/")):
            raise Unprocessable(
                f"{rel}: names that start with '.' are hidden files, which listings do not show; "
                "choose a name without the leading dot",
                code="hidden_name",
            )
        if (found := _BIDI_CONTROL.search(rel)) is not None:
            raise Unprocessable(
                f"the name holds U+{ord(found.group()):04X}, which changes the direction text is shown in; "
                "choose a name without it",
                code="bidi_in_name",
            )
        if (found := _LINE_BREAKING.search(rel)) is not None:
            raise Unprocessable(
                f"the name holds U+{ord(found.group()):04X}, a control character or line break; "
                "choose a name without it",
                code="control_in_name",
            )

    def _ensure_home(self, user: User) -> None:
        if self.settings.per_user_folders and not user.admin:
            (self.workspace.root / self.settings.home_dir / user.name).mkdir(parents=True, exist_ok=True)
            (self.workspace.root / self.settings.shared_dir).mkdir(parents=True, exist_ok=True)

    def stream_for(self, rel: str) -> str:
        """Who hears of a change: the owner of a home folder, or everyone."""
        return change_stream(self.settings, rel)

    async def _changed(self, rel: str, action: str, kind: str, **extra: Any) -> None:
        if self.announce is not None:
            await self.announce(self.stream_for(rel), {"path": rel, "action": action, "type": kind, **extra})

    # models --------------------------------------------------------------------------------------------------
    def _model(self, path: Path, rel: str, areas: Areas, *, content: bool, fmt: str | None = None) -> dict[str, Any]:
        try:
            info = path.stat()
        except FileNotFoundError:  # a link to nothing: the link itself (found from outside: a 500 after its rename)
            info = path.lstat()
        kind = "directory" if stat.S_ISDIR(info.st_mode) else _kind(path)
        model = _shape(path.name if rel else "", rel, kind, areas.can_change(rel) if rel else False, info)
        if not content:
            return model
        if kind == "directory":
            model.update(format="json", content=self._entries(path, rel, areas))
        elif info.st_size > self.settings.max_upload_bytes:
            # Inside JSON (base64 at that) the whole file is held in memory several times over (found from
            # outside: 300 MB read this way took the server from 186 MB to 1.36 GB); downloads stream it.
            raise PayloadTooLarge(
                f"{rel} is {info.st_size} bytes, past the {self.settings.max_upload_bytes} that are sent inside a "
                "contents model",
                code="too_big_to_read",
                hint=f"download it: GET /files/{rel}",
            )
        elif kind == "notebook" and fmt in (None, "json"):
            try:
                notebook = json.loads(read_regular(path, rel))
            except (ValueError, RecursionError):
                raise Unprocessable(
                    f"{rel} is not valid notebook JSON", code="invalid_notebook", hint="ask for format=text or base64"
                ) from None
            model.update(format="json", content=notebook, mimetype="application/x-ipynb+json")
        else:
            data = read_regular(path, rel)
            if fmt != "base64":
                try:
                    model.update(format="text", content=data.decode("utf-8"), mimetype="text/plain")
                    return model
                except UnicodeDecodeError:
                    if fmt == "text":
                        raise BadRequest(f"{rel} is not UTF-8 text; ask for format=base64", code="not_text") from None
            model.update(format="base64", content=base64.b64encode(data).decode(), mimetype="application/octet-stream")
        return model

    def _entries(self, folder: Path, rel: str, areas: Areas) -> list[dict[str, Any]]:
        """The models of what `folder` holds, by name, without hidden names, what the user may not see and links
        that lead outside. One scan of the folder and one stat an entry (a link: where it leads is resolved): 20,000
        files took 0.9 s when each was resolved and stat'ed as a path of its own."""
        entries = []
        with os.scandir(folder) as scan:
            found = sorted(scan, key=lambda entry: entry.name)
        for entry in found:
            child_rel = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith(".") or not areas.can_see(child_rel):
                continue
            try:
                if entry.is_symlink():
                    self.workspace.resolve(child_rel)  # hides links that lead outside
                    info = os.stat(entry.path)
                else:
                    info = entry.stat(follow_symlinks=False)
            except (BadRequest, OSError):
                continue
            kind = "directory" if stat.S_ISDIR(info.st_mode) else _kind_of_name(entry.name)
            entries.append(_shape(entry.name, child_rel, kind, areas.can_change(child_rel), info))
        return entries

    # reading -------------------------------------------------------------------------------------------------
    async def get(self, user: User, user_path: str, *, content: bool = True, fmt: str | None = None) -> dict[str, Any]:
        self._ensure_home(user)
        path, rel = self._path(user, user_path)
        areas = self.areas(user)
        if not path.exists() or (rel and not path.is_dir() and not areas.can_read(rel)):
            raise NotFound(f"nothing at {rel or '/'}", code="file_not_found")
        return await asyncio.to_thread(self._model, path, rel, areas, content=content, fmt=fmt)

    def file_for_download(self, user: User, user_path: str) -> Path:
        path, rel = self._path(user, user_path)
        if not path.is_file() or not self.areas(user).can_read(rel):
            raise NotFound(f"no file at {rel}", code="file_not_found")
        return path

    # writing -------------------------------------------------------------------------------------------------
    async def save_stream(
        self, user: User, user_path: str, chunks: Any, *, overwrite: bool, expected_size: int | None = None
    ) -> dict[str, Any]:
        """Upload: the body goes to a temporary file next to the target, is checked, then renamed into place."""
        self._ensure_home(user)
        path, rel = self._path(user, user_path, write=True)
        limit = self.settings.max_upload_bytes
        if expected_size is not None and expected_size > limit:
            raise PayloadTooLarge(f"the upload is {expected_size} bytes; the limit is {limit}")
        if path.is_dir():
            raise Conflict(f"{rel} is a folder", code="is_a_directory")
        if not path.parent.is_dir():
            raise NotFound(f"no folder {self.workspace.lexical(path.parent) or '/'}", code="folder_not_found")
        self._refuse_new_name(path, rel)
        with _on_disk(f"write {rel}"):
            fd, tmp = temp_file(path.parent, ".upload")
        where = Path(os.path.realpath(tmp))  # as the descriptor names it (a linked folder on the way resolved)
        placed = False
        try:
            size = 0
            with os.fdopen(fd, "wb", closefd=False) as out:
                async for chunk in chunks:  # a client that goes away raises here, as itself
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"the upload is over the limit of {limit} bytes")
                    with _on_disk(f"write {rel}"):
                        out.write(chunk)
                with _on_disk(f"write {rel}"):
                    out.flush()
            if path.suffix == ".ipynb":
                await asyncio.to_thread(checked, tmp.read_bytes(), rel, self.settings.max_notebook_cells)
            async with self._lock:
                if _current_path(fd) not in (where, None) or not path.parent.is_dir():
                    # Its folder was moved or deleted meanwhile (found from outside: a 500, and the part written
                    # stayed hidden in the moved folder, which could then not be deleted as "not empty").
                    folder = self.workspace.lexical(path.parent) or "/"
                    raise NotFound(
                        f"the folder {folder} was moved or deleted during the upload; {rel} was not saved",
                        code="folder_not_found",
                    )
                existed = path.exists()
                if existed and not overwrite:
                    raise Conflict(f"{rel} exists; ask to overwrite it", code="exists", hint="add ?overwrite=true")
                try:
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, path)
                except FileNotFoundError:
                    raise  # its folder went, and not through the service: said below
                except OSError as exc:
                    raise disk_refusal(exc, f"write {rel}") from None
                placed = True
        except FileNotFoundError:  # the folder went while this wrote (not through the service)
            folder = self.workspace.lexical(path.parent) or "/"
            raise NotFound(f"the folder {folder} is gone; {rel} was not saved", code="folder_not_found") from None
        finally:
            if not placed:  # the part written goes, wherever its folder went
                with contextlib.suppress(OSError):
                    (_current_path(fd) or tmp).unlink()
            os.close(fd)
        await self._changed(rel, "modified" if existed else "created", _kind(path))
        return self._model(path, rel, self.areas(user), content=False)

    async def save_model(self, user: User, user_path: str, model: dict[str, Any], *, overwrite: bool) -> dict[str, Any]:
        """Jupyter-style save: {"type": "notebook"|"file"|"directory", "format": "json"|"text"|"base64", "content"}."""
        kind = model.get("type")
        if kind == "directory":
            return await self.mkdir(user, user_path)
        content, fmt = model.get("content"), model.get("format")
        if kind == "notebook" or (kind is None and fmt == "json"):
            data = json.dumps(content, indent=1, ensure_ascii=False).encode() + b"\n"
        elif fmt == "base64" and isinstance(content, str):
            try:
                data = base64.b64decode(content, validate=True)
            except ValueError:
                raise BadRequest("content is not valid base64", code="bad_base64") from None
        elif isinstance(content, str):
            data = content.encode("utf-8")
        else:
            raise BadRequest("expected {type, format, content} with content a string (or a notebook object)")

        async def one_chunk() -> Any:
            yield data

        return await self.save_stream(user, user_path, one_chunk(), overwrite=overwrite)

    async def mkdir(self, user: User, user_path: str) -> dict[str, Any]:
        self._ensure_home(user)
        path, rel = self._path(user, user_path, write=True)
        async with self._lock:
            if path.exists():
                raise Conflict(f"{rel} exists", code="exists")
            if not path.parent.is_dir():
                raise NotFound(f"no folder {self.workspace.lexical(path.parent) or '/'}", code="folder_not_found")
            self._refuse_new_name(path, rel)
            with _on_disk(f"make the folder {rel}"):
                path.mkdir()
        await self._changed(rel, "created", "directory")
        return self._model(path, rel, self.areas(user), content=False)

    async def rename(self, user: User, user_path: str, new_path: str, *, overwrite: bool) -> dict[str, Any]:
        source, rel = self._path(user, user_path, write=True)
        target, new_rel = self._path(user, new_path, write=True)
        if not source.exists() and not source.is_symlink():
            raise NotFound(f"nothing at {rel}", code="file_not_found")
        if target == source:
            return self._model(source, rel, self.areas(user), content=False)
        real_source = Path(os.path.realpath(source))
        if source.is_dir() and (source in target.parents or real_source in Path(os.path.realpath(target)).parents):
            # Also through a link inside it (found from outside: "Invalid argument", the disk's own word)
            raise BadRequest(f"cannot move {rel} into itself", code="into_itself")
        async with self._lock:
            if not source.exists() and not source.is_symlink():
                raise NotFound(f"nothing at {rel}", code="file_not_found")
            if target.exists() and not overwrite:
                raise Conflict(f"{new_rel} exists; ask to overwrite it", code="exists")
            if target.exists() and target.is_dir() != source.is_dir():
                what = "a folder" if target.is_dir() else "a file"
                raise Conflict(f"{new_rel} is {what}; cannot replace it with this", code="type_mismatch")
            if target.is_dir() and any(target.iterdir()):
                raise Conflict(f"{new_rel} is a folder that is not empty", code="not_empty")
            if not target.parent.is_dir():
                raise NotFound(f"no folder {self.workspace.lexical(target.parent) or '/'}", code="folder_not_found")
            self._refuse_new_name(target, new_rel)
            try:
                os.replace(source, target)
            except OSError as exc:
                raise Conflict(f"cannot move {rel} to {new_rel}: {exc.strerror}", code="move_failed") from None
        kind = _kind(target)
        await self._changed(new_rel, "moved", kind, **{"from": rel})
        return self._model(target, new_rel, self.areas(user), content=False)

    def _copy_name(self, folder: Path, source: Path) -> Path:
        """Jupyter's naming: report.ipynb → report-Copy1.ipynb, -Copy2, …; the stem is shortened where the name
        would pass the file system's limit of 255 bytes."""
        stem, suffix = source.stem, source.suffix
        for n in range(1, 10_000):
            tail = f"-Copy{n}{suffix}"
            room = MAX_NAME_BYTES - len(tail.encode())
            candidate = folder / (stem.encode()[:room].decode(errors="ignore") + tail)
            if not candidate.exists():
                return candidate
        raise Conflict("too many copies", code="exists")

    async def copy(self, user: User, source_path: str, folder_path: str, name: str | None = None) -> dict[str, Any]:
        source, rel = self._path(user, source_path)
        if not self.areas(user).can_read(rel) or not source.exists():
            raise NotFound(f"no file at {rel}", code="file_not_found")
        if not source.is_file():
            what = "a folder" if source.is_dir() else "not a regular file"
            raise Unprocessable(f"{rel} is {what}: only files are copied", code="not_a_file")
        folder, folder_rel = self._path(user, folder_path)
        if not folder.is_dir():
            raise NotFound(f"no folder {folder_rel}", code="folder_not_found")
        async with self._lock:
            if name:
                target, target_rel = self._path(user, f"{folder_rel}/{name}" if folder_rel else name, write=True)
                if target.exists():
                    raise Conflict(f"{target_rel} exists", code="exists")
                self._refuse_new_name(target, target_rel)
            else:
                target = self._copy_name(folder, source)
                target_rel = self.workspace.lexical(target)
                if not self.areas(user).can_change(target_rel):
                    raise Forbidden(f"you may not change {folder_rel or '/'}", code="not_yours")
            with _on_disk(f"copy {rel} to {target_rel}"):
                await asyncio.to_thread(_copy_file, source, rel, target)
        await self._changed(target_rel, "created", _kind(target), copied_from=rel)
        return self._model(target, target_rel, self.areas(user), content=False)

    async def delete(self, user: User, user_path: str, *, recursive: bool = False) -> None:
        path, rel = self._path(user, user_path, write=True, link_itself=True)
        async with self._lock:
            if not path.exists() and not path.is_symlink():
                raise NotFound(f"nothing at {rel}", code="file_not_found")
            kind = _kind(path)
            if path.is_symlink() or not path.is_dir():
                with _on_disk(f"delete {rel}"):
                    path.unlink()  # a link goes, never what it points to
            elif any(path.iterdir()) and not recursive:
                raise Conflict(f"{rel} is not empty", code="not_empty", hint="add ?recursive=true")
            else:
                failed = await asyncio.to_thread(_remove_tree, path)
                if failed is not None:
                    # Part of it went: pages showing the folder learn that it changed, and the answer says what stayed.
                    await self._changed(rel, "modified", kind)
                    where, exc = failed
                    refusal = disk_refusal(exc, f"delete {self.workspace.lexical(where)}")
                    refusal.message += f"; the rest of {rel} that could be deleted was"
                    raise refusal
        await self._changed(rel, "deleted", kind)


def _copy_file(source: Path, shown: str, target: Path) -> None:
    """Copy the regular file `source` to `target` atomically, a block at a time (found from outside: a 300 MB copy
    held the whole file in the server's memory)."""
    with open_regular(source, shown) as data:
        atomic_write(target, data)


def _remove_tree(path: Path) -> tuple[Path, OSError] | None:
    """Delete the folder `path` with everything in it; the first thing that could not be deleted, and why (what
    could be goes all the same), or None."""
    failed: list[tuple[Path, OSError]] = []

    def note(_function: Any, where: str, exc_info: Any) -> None:
        exc = exc_info[1]
        if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):  # gone meanwhile: what was asked
            failed.append((Path(where), exc))

    shutil.rmtree(path, onerror=note)  # Python 3.11: onexc comes with 3.12
    return failed[0] if failed else None
