"""The Contents service on its own: a real workspace in a temporary folder, a fake announce callback, no server.

Each change announces one file.changed event to the right stream; refused changes announce nothing; uploads are
atomic (the old file stays whole until the new one is complete and checked) and leave no temporary files.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nbrelay.config import Settings
from nbrelay.contents import Contents
from nbrelay.errors import BadRequest, Conflict, Forbidden, NbrelayError, NotFound, PayloadTooLarge, Unprocessable
from nbrelay.jobs import User
from tests.conftest import NOTEBOOKS

TINY = (NOTEBOOKS / "tiny.ipynb").read_bytes()
LOCAL = User("local", admin=True)
ALICE = User("alice")


class Recorder:
    """The announce callback: remembers (stream, data) of every event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, stream: str, data: dict[str, Any]) -> None:
        self.events.append((stream, data))

    def take(self) -> list[tuple[str, dict[str, Any]]]:
        taken, self.events = self.events, []
        return taken


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def make(tmp_path: Path, recorder: Recorder, **settings: Any) -> Contents:
    (tmp_path / "ws").mkdir(parents=True, exist_ok=True)
    return Contents(Settings(workspace=tmp_path / "ws", data_dir=tmp_path / "data", **settings), announce=recorder)


@pytest.fixture
def contents(tmp_path: Path, recorder: Recorder) -> Contents:
    return make(tmp_path, recorder)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".*") if p.name.endswith((".upload", ".tmp")))


def names(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# events of each operation -------------------------------------------------------------------------------------------
async def test_each_change_announces_one_event(contents: Contents, recorder: Recorder) -> None:
    root = contents.workspace.root
    await contents.save_stream(LOCAL, "a.ipynb", chunks(TINY[:100], TINY[100:]), overwrite=False)
    await contents.save_stream(LOCAL, "a.ipynb", chunks(TINY), overwrite=True)
    await contents.save_model(LOCAL, "t.txt", {"type": "file", "format": "text", "content": "t"}, overwrite=False)
    await contents.mkdir(LOCAL, "sub")
    await contents.save_model(LOCAL, "sub/deeper", {"type": "directory"}, overwrite=False)
    await contents.rename(LOCAL, "a.ipynb", "sub/b.ipynb", overwrite=False)
    await contents.copy(LOCAL, "sub/b.ipynb", "")
    await contents.copy(LOCAL, "t.txt", "sub", "u.txt")
    await contents.rename(LOCAL, "sub/deeper", "deep", overwrite=False)
    await contents.delete(LOCAL, "t.txt")
    await contents.delete(LOCAL, "sub", recursive=True)
    streams = {stream for stream, _ in recorder.events}
    assert streams == {"user:local"}
    assert [data for _, data in recorder.take()] == [
        {"path": "a.ipynb", "action": "created", "type": "notebook"},
        {"path": "a.ipynb", "action": "modified", "type": "notebook"},
        {"path": "t.txt", "action": "created", "type": "file"},
        {"path": "sub", "action": "created", "type": "directory"},
        {"path": "sub/deeper", "action": "created", "type": "directory"},
        {"path": "sub/b.ipynb", "action": "moved", "type": "notebook", "from": "a.ipynb"},
        {"path": "b-Copy1.ipynb", "action": "created", "type": "notebook", "copied_from": "sub/b.ipynb"},
        {"path": "sub/u.txt", "action": "created", "type": "file", "copied_from": "t.txt"},
        {"path": "deep", "action": "moved", "type": "directory", "from": "sub/deeper"},
        {"path": "t.txt", "action": "deleted", "type": "file"},
        {"path": "sub", "action": "deleted", "type": "directory"},
    ]
    assert names(root) == ["b-Copy1.ipynb", "deep"]
    assert (root / "b-Copy1.ipynb").read_bytes() == TINY


async def test_models_returned_by_changes(contents: Contents) -> None:
    model = await contents.save_stream(LOCAL, "x.bin", chunks(b"\x00\xff"), overwrite=False)
    assert {k: model[k] for k in ("name", "path", "type", "size", "content", "writable")} == {
        "name": "x.bin",
        "path": "x.bin",
        "type": "file",
        "size": 2,
        "content": None,
        "writable": True,
    }
    read = await contents.get(LOCAL, "x.bin")
    assert read["format"] == "base64" and base64.b64decode(read["content"]) == b"\x00\xff"
    folder = await contents.mkdir(LOCAL, "f")
    assert folder["type"] == "directory" and folder["size"] is None
    root = await contents.get(LOCAL, "")
    assert root["path"] == "" and root["writable"] is False
    assert [e["name"] for e in root["content"]] == ["f", "x.bin"]


async def test_refused_changes_announce_nothing(contents: Contents, recorder: Recorder) -> None:
    root = contents.workspace.root
    (root / "a.txt").write_text("a")
    (root / "full").mkdir()
    (root / "full" / "x").write_text("x")
    attempts: list[tuple[type[NbrelayError], Any]] = [
        (Conflict, contents.save_stream(LOCAL, "a.txt", chunks(b"b"), overwrite=False)),
        (Unprocessable, contents.save_stream(LOCAL, "n.ipynb", chunks(b"{"), overwrite=False)),
        (NotFound, contents.save_stream(LOCAL, "nope/a.txt", chunks(b"b"), overwrite=False)),
        (BadRequest, contents.save_stream(LOCAL, "../a.txt", chunks(b"b"), overwrite=False)),
        (Conflict, contents.mkdir(LOCAL, "full")),
        (Conflict, contents.rename(LOCAL, "a.txt", "full/x", overwrite=False)),
        (NotFound, contents.rename(LOCAL, "missing", "b", overwrite=False)),
        (BadRequest, contents.rename(LOCAL, "full", "full/inner", overwrite=False)),
        (Conflict, contents.copy(LOCAL, "a.txt", "", "a.txt")),
        (NotFound, contents.copy(LOCAL, "missing.txt", "")),
        (Conflict, contents.delete(LOCAL, "full")),
        (NotFound, contents.delete(LOCAL, "missing")),
    ]
    for error, attempt in attempts:
        with pytest.raises(error):
            await attempt
    assert recorder.events == []
    assert names(root) == ["a.txt", "full", "full/x"]
    assert (root / "a.txt").read_text() == "a"


async def test_streams_in_token_mode(tmp_path: Path, recorder: Recorder) -> None:
    contents = make(tmp_path, recorder, auth_mode="token")
    await contents.save_stream(ALICE, "users/alice/a.txt", chunks(b"a"), overwrite=False)
    await contents.save_stream(ALICE, "shared/s.txt", chunks(b"s"), overwrite=False)
    await contents.rename(ALICE, "shared/s.txt", "users/alice/s.txt", overwrite=False)
    await contents.save_stream(User("root", admin=True), "top.txt", chunks(b"t"), overwrite=False)
    assert [(stream, data["path"]) for stream, data in recorder.take()] == [
        ("user:alice", "users/alice/a.txt"),
        ("broadcast", "shared/s.txt"),
        ("user:alice", "users/alice/s.txt"),
        ("broadcast", "top.txt"),
    ]
    assert contents.stream_for("users/bob/x") == "user:bob"
    assert contents.stream_for("users") == "broadcast"


async def test_token_mode_areas(tmp_path: Path, recorder: Recorder) -> None:
    contents = make(tmp_path, recorder, auth_mode="token")
    root = contents.workspace.root
    await contents.save_stream(User("bob"), "users/bob/b.txt", chunks(b"b"), overwrite=False)
    (root / "top.txt").write_text("top")
    with pytest.raises(Forbidden):
        await contents.save_stream(ALICE, "users/bob/x.txt", chunks(b"x"), overwrite=False)
    with pytest.raises(Forbidden):
        await contents.save_stream(ALICE, "x.txt", chunks(b"x"), overwrite=False)
    for path in ("users/bob/b.txt", "users/bob", "top.txt"):
        with pytest.raises(NotFound):
            await contents.get(ALICE, path)
    with pytest.raises(NotFound):
        contents.file_for_download(ALICE, "users/bob/b.txt")
    with pytest.raises(NotFound):
        await contents.copy(ALICE, "users/bob/b.txt", "users/alice")
    await contents.save_stream(ALICE, "shared/s.txt", chunks(b"s"), overwrite=False)
    with pytest.raises(Forbidden):
        await contents.copy(ALICE, "shared/s.txt", "")  # a copy in the root: not alice's to make
    listing = await contents.get(ALICE, "")
    assert [e["name"] for e in listing["content"]] == ["shared", "users"]
    assert [e["name"] for e in (await contents.get(ALICE, "users"))["content"]] == ["alice"]


async def test_the_root_is_never_deleted_or_replaced(tmp_path: Path, recorder: Recorder) -> None:
    for mode, user in (("none", LOCAL), ("token", ALICE)):
        contents = make(tmp_path / mode, recorder, auth_mode=mode)
        root = contents.workspace.root
        (root / "keep.txt").write_text("keep")
        for path in ("", "/", "//", "."):
            with pytest.raises((BadRequest, Forbidden)):
                await contents.delete(user, path, recursive=True)
            with pytest.raises((BadRequest, Forbidden, Conflict)):
                await contents.save_stream(user, path, chunks(b"x"), overwrite=True)
        assert root.is_dir() and (root / "keep.txt").read_text() == "keep", mode
    assert recorder.events == []


async def test_moving_a_folder_onto_an_existing_path_is_a_conflict(contents: Contents, recorder: Recorder) -> None:
    root = contents.workspace.root
    for name in ("d1", "d2"):
        (root / name).mkdir()
        (root / name / "f").write_text(name)
    (root / "file.txt").write_text("file")
    for target in ("d2", "file.txt"):
        with pytest.raises(Conflict):
            await contents.rename(LOCAL, "d1", target, overwrite=True)
    assert names(root) == ["d1", "d1/f", "d2", "d2/f", "file.txt"]
    assert recorder.events == []


# atomic uploads ------------------------------------------------------------------------------------------------------
async def test_a_failing_upload_leaves_the_old_file_whole(contents: Contents, recorder: Recorder) -> None:
    root = contents.workspace.root
    (root / "data.bin").write_bytes(b"old contents")

    async def broken() -> AsyncIterator[bytes]:
        yield b"new "
        await asyncio.sleep(0)
        yield b"contents, half"
        raise ConnectionResetError("the client went away")

    with pytest.raises(ConnectionResetError):
        await contents.save_stream(LOCAL, "data.bin", broken(), overwrite=True)
    assert (root / "data.bin").read_bytes() == b"old contents"
    with pytest.raises(ConnectionResetError):
        await contents.save_stream(LOCAL, "fresh.bin", broken(), overwrite=False)
    assert not (root / "fresh.bin").exists()
    assert leftovers(root) == [] and names(root) == ["data.bin"]
    assert recorder.events == []


async def test_a_cancelled_upload_leaves_no_trace(contents: Contents, recorder: Recorder) -> None:
    root = contents.workspace.root
    (root / "data.bin").write_bytes(b"old")
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"part"
        started.set()
        await asyncio.sleep(3600)
        yield b"never"

    task = asyncio.create_task(contents.save_stream(LOCAL, "data.bin", slow(), overwrite=True))
    await started.wait()
    assert len(leftovers(root)) == 1  # the body goes to a temporary file next to the target
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (root / "data.bin").read_bytes() == b"old"
    assert leftovers(root) == [] and recorder.events == []


async def test_limit_and_notebook_check_keep_the_old_file(tmp_path: Path, recorder: Recorder) -> None:
    contents = make(tmp_path, recorder, max_upload_bytes=10)
    root = contents.workspace.root
    (root / "small.txt").write_bytes(b"old")
    (root / "nb.ipynb").write_bytes(b"{}")  # whatever was there stays as it was
    with pytest.raises(PayloadTooLarge):
        await contents.save_stream(LOCAL, "small.txt", chunks(b"123456", b"78901"), overwrite=True)
    with pytest.raises(PayloadTooLarge):
        await contents.save_stream(LOCAL, "small.txt", chunks(b"x"), overwrite=True, expected_size=11)
    with pytest.raises(PayloadTooLarge):
        await contents.save_model(
            LOCAL, "m.txt", {"type": "file", "format": "text", "content": "x" * 11}, overwrite=True
        )
    with pytest.raises(Unprocessable, match=r"nb\.ipynb is not a valid notebook: "):
        await contents.save_stream(LOCAL, "nb.ipynb", chunks(b"[]"), overwrite=True)
    assert (root / "small.txt").read_bytes() == b"old" and (root / "nb.ipynb").read_bytes() == b"{}"
    ok = await contents.save_stream(LOCAL, "small.txt", chunks(b"1234567890"), overwrite=True)
    assert ok["size"] == 10
    assert leftovers(root) == [] and names(root) == ["nb.ipynb", "small.txt"]


async def test_concurrent_uploads_of_one_new_file_one_wins(contents: Contents, recorder: Recorder) -> None:
    root = contents.workspace.root

    async def body(i: int) -> AsyncIterator[bytes]:
        for _ in range(5):
            await asyncio.sleep(0)
            yield f"{i}".encode() * 100

    results = await asyncio.gather(
        *(contents.save_stream(LOCAL, "one.txt", body(i), overwrite=False) for i in range(10)),
        return_exceptions=True,
    )
    winners = [i for i, r in enumerate(results) if isinstance(r, dict)]
    assert len(winners) == 1 and all(isinstance(r, Conflict) for r in results if not isinstance(r, dict))
    assert (root / "one.txt").read_bytes() == f"{winners[0]}".encode() * 500
    assert leftovers(root) == [] and len(recorder.events) == 1


async def test_save_model_formats(contents: Contents) -> None:
    root = contents.workspace.root
    nb = json.loads(TINY)
    await contents.save_model(LOCAL, "n.ipynb", {"type": "notebook", "format": "json", "content": nb}, overwrite=False)
    assert json.loads((root / "n.ipynb").read_bytes()) == nb
    await contents.save_model(LOCAL, "j.ipynb", {"format": "json", "content": nb}, overwrite=False)
    data = {"type": "file", "format": "base64", "content": base64.b64encode(b"\x00\x01").decode()}
    await contents.save_model(LOCAL, "b.bin", data, overwrite=False)
    assert (root / "b.bin").read_bytes() == b"\x00\x01"
    for bad in ({"type": "file", "format": "base64", "content": "%%%"}, {"type": "file", "content": 42}, {}):
        with pytest.raises(BadRequest):
            await contents.save_model(LOCAL, "bad.txt", bad, overwrite=False)
    assert not (root / "bad.txt").exists()


# found from outside (a fourth round) --------------------------------------------------------------------------------
async def test_a_named_pipe_is_refused_at_once_not_read(contents: Contents) -> None:
    """A pipe no one writes to held a thread for ever on each read; enough of them stopped the server."""
    root = contents.workspace.root
    os.mkfifo(root / "pipe")
    os.mkfifo(root / "pipe.ipynb")
    for path in ("pipe", "pipe.ipynb"):
        with pytest.raises(Unprocessable, match="not a regular file") as refused:
            await asyncio.wait_for(contents.get(LOCAL, path), timeout=10)
        assert refused.value.code == "not_a_file"
    listing = await contents.get(LOCAL, "")
    assert {e["name"]: e["type"] for e in listing["content"]} == {"pipe": "file", "pipe.ipynb": "notebook"}
    with pytest.raises(Unprocessable, match="not a regular file"):
        await asyncio.wait_for(contents.copy(LOCAL, "pipe.ipynb", ""), timeout=10)


async def test_an_upload_whose_folder_is_deleted_or_moved_meanwhile_is_a_404_and_leaves_nothing(
    contents: Contents, recorder: Recorder
) -> None:
    root = contents.workspace.root
    for change in ("delete", "move"):
        await contents.mkdir(LOCAL, "d")
        halfway, go_on = asyncio.Event(), asyncio.Event()

        async def body(halfway: asyncio.Event, go_on: asyncio.Event) -> AsyncIterator[bytes]:
            yield b"first half "
            halfway.set()
            await go_on.wait()
            yield b"second half"

        upload = asyncio.create_task(contents.save_stream(LOCAL, "d/file.bin", body(halfway, go_on), overwrite=False))
        await halfway.wait()
        if change == "delete":
            await contents.delete(LOCAL, "d", recursive=True)
        else:
            await contents.rename(LOCAL, "d", "moved", overwrite=False)
        go_on.set()
        with pytest.raises(NotFound, match=r"moved or deleted during the upload|is gone") as refused:
            await upload
        assert refused.value.code == "folder_not_found"
        assert leftovers(root) == [], change
        if change == "move":
            assert names(root) == ["moved"]  # empty, as it shows: it can be deleted as such
            await contents.delete(LOCAL, "moved")
    assert not any(data["path"].endswith("file.bin") for _, data in recorder.events)


async def test_names_up_to_the_limit_are_uploaded_and_copied(contents: Contents) -> None:
    """Temporary files named after their target passed 255 bytes for a long target name."""
    root = contents.workspace.root
    name = "n" * 249 + ".ipynb"  # 255 bytes
    await contents.save_stream(LOCAL, name, chunks(TINY), overwrite=False)
    copy = await contents.copy(LOCAL, name, "")
    assert len(copy["name"].encode()) <= 255 and copy["name"].endswith("-Copy1.ipynb")
    assert (root / copy["name"]).read_bytes() == TINY
    accented = "é" * 121 + ".ipynb"  # 248 bytes: a copy's name is cut between characters, never inside one
    await contents.save_stream(LOCAL, accented, chunks(TINY), overwrite=False)
    copied = (await contents.copy(LOCAL, accented, ""))["name"]
    assert copied.encode().decode() == copied and len(copied.encode()) <= 255
    assert leftovers(root) == []


@pytest.mark.parametrize("char", ["\u0085", "\u2028", "\u2029", "\u009b"])
async def test_a_new_name_with_a_line_breaking_character_is_refused(contents: Contents, char: str) -> None:
    root = contents.workspace.root
    with pytest.raises(Unprocessable, match=f"U\\+{ord(char):04X}"):
        await contents.save_stream(LOCAL, f"a{char}Bcc: x.ipynb", chunks(TINY), overwrite=False)
    with pytest.raises(Unprocessable, match=f"U\\+{ord(char):04X}"):
        await contents.mkdir(LOCAL, f"d{char}")
    # One that is there already (made on the disk) can still be renamed away.
    (root / f"old{char}.txt").write_bytes(b"x")
    await contents.rename(LOCAL, f"old{char}.txt", "new.txt", overwrite=False)
    assert names(root) == ["new.txt"]


async def test_what_the_disk_refuses_is_said_and_a_partial_delete_is_announced(
    contents: Contents, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = contents.workspace.root
    (root / "part").mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (root / "part" / name).write_bytes(b"x")
    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kw: Any) -> None:
        if Path(path).name == "b.txt" or str(path) == "b.txt":
            raise PermissionError(1, "Operation not permitted")
        real_unlink(path, *args, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(Forbidden, match=r"could not delete part/b\.txt: Operation not permitted") as refused:
        await contents.delete(LOCAL, "part", recursive=True)
    assert refused.value.code == "disk_refused"
    assert names(root) == ["part", "part/b.txt"]
    assert recorder.take() == [("user:local", {"path": "part", "action": "modified", "type": "directory"})]
    with pytest.raises(Forbidden, match=r"could not delete part/b\.txt"):
        await contents.delete(LOCAL, "part/b.txt")
    assert recorder.take() == []


async def test_a_dangling_link_is_renamed_and_a_folder_is_not_moved_into_itself_through_a_link(
    contents: Contents,
) -> None:
    root = contents.workspace.root
    (root / "loop").symlink_to(root / "nowhere")
    moved = await contents.rename(LOCAL, "loop", "still-nowhere", overwrite=False)
    assert moved["path"] == "still-nowhere" and (root / "still-nowhere").is_symlink()
    (root / "real" / "sub").mkdir(parents=True)
    (root / "inlink").symlink_to(root / "real")
    with pytest.raises(BadRequest, match="cannot move real into itself"):
        await contents.rename(LOCAL, "real", "inlink/sub/real", overwrite=False)
    assert (root / "real" / "sub").is_dir()


async def test_a_file_past_the_upload_limit_is_not_read_into_a_model(tmp_path: Path, recorder: Recorder) -> None:
    """A model holds the file in memory (base64 inside JSON); a big one is downloaded, which streams it."""
    contents = make(tmp_path, recorder, max_upload_bytes=1000)
    root = contents.workspace.root
    (root / "big.bin").write_bytes(b"x" * 1001)
    (root / "small.bin").write_bytes(b"x" * 1000)
    with pytest.raises(PayloadTooLarge, match="1001 bytes, past the 1000 that are sent") as refused:
        await contents.get(LOCAL, "big.bin")
    assert refused.value.hint == "download it: GET /files/big.bin"
    assert (await contents.get(LOCAL, "big.bin", content=False))["size"] == 1001
    assert (await contents.get(LOCAL, "small.bin"))["content"] == "x" * 1000
