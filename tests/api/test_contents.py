"""The contents API against a live server: listing, reading, uploading (raw, multipart, JSON), limits, conflicts,
copy/move/delete/mkdir, file.changed events, races between clients, and per-user areas in auth mode token."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.client import HTTPResponse, RemoteDisconnected
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import NOTEBOOKS
from tests.live import LiveServer, bearer, make_token
from tests.push.transports.conftest import live  # noqa: F401

TINY = (NOTEBOOKS / "tiny.ipynb").read_bytes()
BINARY = bytes(range(256)) * 4  # not UTF-8


# fixtures and helpers -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server (auth mode none) for the tests that need no special settings; each test works in its own
    folder of the workspace."""
    root = tmp_path_factory.mktemp("contents")
    (root / "workspace").mkdir()
    started = LiveServer(root / "workspace", root / "data").start()
    yield started
    started.stop()


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def folder(server: LiveServer, request: pytest.FixtureRequest) -> tuple[str, Path]:
    """A fresh folder for this test: (its workspace path, its place on disk)."""
    name = f"t-{request.node.name[:60].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:6]}"
    path = server.settings.workspace / name
    path.mkdir()
    return name, path


def api(path: str) -> str:
    return f"/api/contents/{path}"


def error_code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def leftovers(folder: Path) -> list[str]:
    """Temporary files an upload or a copy may have left behind."""
    return sorted(p.name for p in folder.rglob(".*") if p.name.endswith((".upload", ".tmp")))


def tree(folder: Path) -> dict[str, bytes | None]:
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink() else None)
        for p in sorted(folder.rglob("*"))
    }


def notebook(text: str = "1 + 1") -> dict[str, Any]:
    return {
        "cells": [
            {"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [], "source": text}
        ],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def raw_request(port: int, head: bytes, body: bytes) -> int:
    """Send a hand-written request (its head without the final blank line); the status, 0 if none came."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\n\r\n" + body)
        response = HTTPResponse(sock)
        try:
            response.begin()
        except (RemoteDisconnected, ConnectionResetError):
            return 0
        response.read()
        return response.status


# listing ------------------------------------------------------------------------------------------------------------
def test_listing_shows_names_types_and_sizes_but_no_hidden_files_or_links_leading_outside(
    http: httpx.Client, folder: tuple[str, Path], tmp_path: Path
) -> None:
    name, path = folder
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (path / "a.ipynb").write_bytes(TINY)
    (path / "b.txt").write_text("hello\n")
    (path / "c.bin").write_bytes(BINARY)
    (path / "sub").mkdir()
    (path / "sub" / "inner.txt").write_text("inner")
    (path / ".hidden").write_text("x")
    (path / ".hidden_dir").mkdir()
    (path / "out_link").symlink_to(outside, target_is_directory=True)
    (path / "out_file.txt").symlink_to(outside / "secret.txt")
    (path / "in_link.ipynb").symlink_to(path / "a.ipynb")
    listing = http.get(api(name))
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert (body["type"], body["path"], body["name"], body["format"]) == ("directory", name, name, "json")
    entries = {e["name"]: e for e in body["content"]}
    assert sorted(entries) == ["a.ipynb", "b.txt", "c.bin", "in_link.ipynb", "sub"]
    assert {n: e["type"] for n, e in entries.items()} == {
        "a.ipynb": "notebook",
        "b.txt": "file",
        "c.bin": "file",
        "in_link.ipynb": "notebook",
        "sub": "directory",
    }
    assert entries["a.ipynb"]["size"] == len(TINY) == entries["in_link.ipynb"]["size"]
    assert entries["b.txt"]["size"] == 6 and entries["c.bin"]["size"] == len(BINARY)
    assert entries["sub"]["size"] is None
    for entry in entries.values():
        assert entry["path"] == f"{name}/{entry['name']}"
        assert entry["content"] is None and entry["writable"] is True
        assert entry["last_modified"].endswith("Z")
    # without content: the folder's own model only
    bare = http.get(api(name), params={"content": 0}).json()
    assert bare["content"] is None and bare["type"] == "directory"
    # the root lists this folder too
    assert name in {e["name"] for e in http.get("/api/contents").json()["content"]}
    # what is hidden from the listing cannot be read through the links either
    assert http.get(api(f"{name}/out_link/secret.txt")).status_code in {400, 404}
    assert http.get(api(f"{name}/out_file.txt")).status_code in {400, 404}


def test_a_hidden_name_is_refused_where_it_would_be_made_and_an_existing_one_can_go(
    http: httpx.Client, folder: tuple[str, Path]
) -> None:
    """Found from outside: ".x.ipynb" uploaded (201) and was then nowhere to be seen, since listings hide it, and
    its second upload asked to replace a file no one could see."""
    name, path = folder
    (path / "a.txt").write_text("a")
    (path / ".made-elsewhere").mkdir()  # by a notebook, say
    made = {
        "upload": http.put(api(f"{name}/.hidden.ipynb"), content=TINY),
        "folder": http.put(api(f"{name}/.dotdir"), json={"type": "directory"}),
        "inside a hidden folder": http.put(api(f"{name}/.made-elsewhere/x.txt"), content=b"x"),
        "rename onto": http.patch(api(f"{name}/a.txt"), json={"path": f"{name}/.a.txt"}),
    }
    spoofed = http.put(api(f"{name}/nul\u202eblah.ipynb"), content=TINY)  # shows as "nulbynpi.halb"
    assert spoofed.status_code == 422 and spoofed.json()["error"]["code"] == "bidi_in_name", spoofed.text
    assert "U+202E" in spoofed.json()["error"]["message"]
    for what, answer in made.items():
        assert answer.status_code == 422, (what, answer.text)
        assert answer.json()["error"]["code"] == "hidden_name", what
        assert "start with '.'" in answer.json()["error"]["message"], what
    assert sorted(p.name for p in path.rglob("*")) == [".made-elsewhere", "a.txt"]  # nothing was made
    (path / ".made-elsewhere" / "y.txt").write_text("x")  # what is there can still be replaced and deleted
    assert http.put(api(f"{name}/.made-elsewhere/y.txt"), params={"overwrite": 1}, content=b"y").status_code == 201
    assert http.delete(api(f"{name}/.made-elsewhere/y.txt")).status_code == 204


def test_listing_a_missing_folder_is_404(http: httpx.Client, folder: tuple[str, Path]) -> None:
    answer = http.get(api(f"{folder[0]}/nope"))
    assert answer.status_code == 404 and error_code(answer) == "file_not_found"


# reading -------------------------------------------------------------------------------------------------------------
def test_read_notebook_text_and_binary(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "a.ipynb").write_bytes(TINY)
    (path / "b.txt").write_text("héllo\n", encoding="utf-8")
    (path / "c.bin").write_bytes(BINARY)
    nb = http.get(api(f"{name}/a.ipynb")).json()
    assert (nb["type"], nb["format"], nb["mimetype"]) == ("notebook", "json", "application/x-ipynb+json")
    assert nb["content"] == json.loads(TINY)
    assert http.get(api(f"{name}/a.ipynb"), params={"format": "json"}).json()["content"] == json.loads(TINY)
    as_text = http.get(api(f"{name}/a.ipynb"), params={"format": "text"}).json()
    assert as_text["format"] == "text" and as_text["content"] == TINY.decode()
    text = http.get(api(f"{name}/b.txt")).json()
    assert (text["type"], text["format"], text["content"]) == ("file", "text", "héllo\n")
    assert text["size"] == len("héllo\n".encode())
    b64 = http.get(api(f"{name}/b.txt"), params={"format": "base64"}).json()
    assert b64["format"] == "base64" and base64.b64decode(b64["content"]) == "héllo\n".encode()
    binary = http.get(api(f"{name}/c.bin")).json()  # not UTF-8: base64 without being asked
    assert binary["format"] == "base64" and base64.b64decode(binary["content"]) == BINARY
    assert base64.b64decode(http.get(api(f"{name}/c.bin"), params={"format": "base64"}).json()["content"]) == BINARY
    refused = http.get(api(f"{name}/c.bin"), params={"format": "text"})
    assert refused.status_code == 400 and error_code(refused) == "not_text"
    meta = http.get(api(f"{name}/c.bin"), params={"content": 0}).json()
    assert meta["content"] is None and meta["size"] == len(BINARY)
    assert http.get(api(f"{name}/c.bin"), params={"format": "xml"}).status_code == 422


def test_reading_a_broken_notebook_is_a_client_error_not_500(http: httpx.Client, folder: tuple[str, Path]) -> None:
    """A notebook that is not JSON (written by something else) must be reported, not crash the request."""
    name, path = folder
    (path / "broken.ipynb").write_bytes((NOTEBOOKS / "malformed.ipynb").read_bytes())
    (path / "latin1.ipynb").write_bytes(b'{"cells": "\xe9"}')
    for file in ("broken.ipynb", "latin1.ipynb"):
        answer = http.get(api(f"{name}/{file}"))
        assert answer.status_code in {400, 422}, f"{file}: {answer.status_code} {answer.text[:200]}"
        assert answer.json()["error"]["message"]
        # as text it is readable
        assert http.get(api(f"{name}/{file}"), params={"format": "base64"}).status_code == 200


def test_download_is_an_attachment(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "page.html").write_text("<script>alert(1)</script>")
    answer = http.get(f"/files/{name}/page.html")
    assert answer.status_code == 200 and answer.content == b"<script>alert(1)</script>"
    assert answer.headers["content-disposition"].startswith("attachment")
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert http.get(f"/files/{name}/missing.txt").status_code == 404
    assert http.get(f"/files/{name}").status_code == 404  # a folder is not a file


# uploading ----------------------------------------------------------------------------------------------------------
def test_upload_raw_multipart_and_json_model(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    raw = http.put(api(f"{name}/raw.bin"), content=BINARY)
    assert raw.status_code == 201, raw.text
    assert raw.json()["path"] == f"{name}/raw.bin" and raw.json()["size"] == len(BINARY)
    assert (path / "raw.bin").read_bytes() == BINARY
    multi = http.put(api(f"{name}/multi.ipynb"), files={"file": ("whatever.name", TINY, "application/x-ipynb+json")})
    assert multi.status_code == 201, multi.text
    assert multi.json()["type"] == "notebook" and (path / "multi.ipynb").read_bytes() == TINY
    nb = notebook("print('hi')")
    model = http.put(api(f"{name}/model.ipynb"), json={"type": "notebook", "format": "json", "content": nb})
    assert model.status_code == 201, model.text
    assert json.loads((path / "model.ipynb").read_bytes()) == nb
    text = http.put(api(f"{name}/model.txt"), json={"type": "file", "format": "text", "content": "é\n"})
    assert text.status_code == 201 and (path / "model.txt").read_text(encoding="utf-8") == "é\n"
    b64 = {"type": "file", "format": "base64", "content": base64.b64encode(BINARY).decode()}
    assert http.put(api(f"{name}/model.bin"), json=b64).status_code == 201
    assert (path / "model.bin").read_bytes() == BINARY
    bad = http.put(api(f"{name}/bad.bin"), json={"type": "file", "format": "base64", "content": "!!not base64!!"})
    assert bad.status_code == 400 and error_code(bad) == "bad_base64"
    no_field = http.put(api(f"{name}/x.txt"), files={"other": ("x", b"x")})
    assert no_field.status_code == 400
    assert http.put(api(f"{name}/missing-folder/x.txt"), content=b"x").status_code == 404
    assert http.get(api(f"{name}/model.ipynb")).json()["content"] == nb
    assert leftovers(path) == [] and not (path / "bad.bin").exists() and not (path / "x.txt").exists()


def test_upload_over_the_limit_is_413_and_writes_nothing(live: Any) -> None:  # noqa: F811
    server = live(max_upload_bytes=1000)
    workspace = server.settings.workspace
    (workspace / "up").mkdir()
    (workspace / "up" / "old.txt").write_bytes(b"old")
    before = tree(workspace)
    big = b"x" * 1001
    answers: dict[str, int] = {}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answers["raw"] = http.put(api("up/raw.txt"), content=big).status_code
        answers["raw over old"] = http.put(api("up/old.txt"), params={"overwrite": 1}, content=big).status_code

        def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
            for _ in range(50):
                yield b"y" * 100

        answers["chunked"] = http.put(api("up/chunked.txt"), content=chunks()).status_code
        answers["multipart"] = http.put(api("up/multi.txt"), files={"file": ("m", big)}).status_code
        text = {"type": "file", "format": "text", "content": "z" * 1001}
        answers["json text"] = http.put(api("up/model.txt"), json=text).status_code
        b64 = {"type": "file", "format": "base64", "content": base64.b64encode(big).decode()}
        answers["json base64"] = http.put(api("up/model.bin"), json=b64).status_code
        huge = {"type": "file", "format": "text", "content": "z" * 100_000}
        answers["json huge"] = http.put(api("up/huge.txt"), json=huge).status_code
    # A Content-Length that lies (small) next to a chunked body that is large.
    body = b"".join(b"%x\r\n%s\r\n" % (200, b"w" * 200) for _ in range(10)) + b"0\r\n\r\n"
    head = b"PUT /api/contents/up/lying.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += b"Content-Length: 10\r\nTransfer-Encoding: chunked"
    lying = raw_request(server.port, head, body)
    assert answers == dict.fromkeys(answers, 413)
    assert lying in {0, 400, 413}
    assert tree(workspace) == before, "something was written"
    assert leftovers(workspace) == []
    # exactly at the limit is fine
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.put(api("up/exact.txt"), content=b"e" * 1000).status_code == 201


def test_upload_of_a_broken_notebook_is_422_with_the_reason(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "good.ipynb").write_bytes(TINY)
    cases = {
        "not json": http.put(api(f"{name}/a.ipynb"), content=b"{not json"),
        "not a notebook": http.put(api(f"{name}/b.ipynb"), content=b'{"hello": 1}'),
        "bad schema": http.put(api(f"{name}/c.ipynb"), content=(NOTEBOOKS / "invalid_schema.ipynb").read_bytes()),
        "model": http.put(api(f"{name}/d.ipynb"), json={"type": "notebook", "format": "json", "content": {"x": 1}}),
        "multipart": http.put(api(f"{name}/e.ipynb"), files={"file": ("e.ipynb", b"[1, 2]")}),
        "over a good one": http.put(api(f"{name}/good.ipynb"), params={"overwrite": "true"}, content=b"nope"),
        "model of a string": http.put(
            api(f"{name}/f.ipynb"), json={"type": "notebook", "format": "json", "content": "notanobject"}
        ),
    }
    for case, answer in cases.items():
        assert answer.status_code == 422, f"{case}: {answer.status_code} {answer.text}"
        error = answer.json()["error"]
        assert error["code"] == "invalid_notebook", case
        assert "is not a valid notebook: " in error["message"] and error["message"].split(": ", 1)[1], case
        assert "object has no attribute" not in error["message"], case  # said as a job's refusal says it
    assert "expected a JSON object" in cases["model of a string"].json()["error"]["message"]
    assert sorted(p.name for p in path.iterdir()) == ["good.ipynb"]
    assert (path / "good.ipynb").read_bytes() == TINY
    assert leftovers(path) == []


# conflicts and overwrite ------------------------------------------------------------------------------------------
def test_conflicts_are_409_and_overwrite_replaces(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "a.txt").write_text("a")
    (path / "b.txt").write_text("b")
    (path / "sub").mkdir()
    put = http.put(api(f"{name}/a.txt"), content=b"new")
    assert put.status_code == 409 and error_code(put) == "exists" and (path / "a.txt").read_text() == "a"
    assert http.put(api(f"{name}/a.txt"), params={"overwrite": "false"}, content=b"new").status_code == 409
    replaced = http.put(api(f"{name}/a.txt"), params={"overwrite": "true"}, content=b"new")
    assert replaced.status_code == 201 and (path / "a.txt").read_text() == "new"
    onto_folder = http.put(api(f"{name}/sub"), params={"overwrite": "true"}, content=b"x")
    assert onto_folder.status_code == 409 and (path / "sub").is_dir()
    patch = http.patch(api(f"{name}/a.txt"), json={"path": f"{name}/b.txt"})
    assert patch.status_code == 409 and (path / "a.txt").read_text() == "new" and (path / "b.txt").read_text() == "b"
    moved = http.patch(api(f"{name}/a.txt"), json={"path": f"{name}/b.txt", "overwrite": True})
    assert moved.status_code == 200 and moved.json()["path"] == f"{name}/b.txt"
    assert not (path / "a.txt").exists() and (path / "b.txt").read_text() == "new"
    file_onto_folder = http.patch(api(f"{name}/b.txt"), json={"path": f"{name}/sub", "overwrite": True})
    assert file_onto_folder.status_code == 409 and (path / "b.txt").exists()
    copy = http.post(api(name), json={"copy_from": f"{name}/b.txt", "name": "b.txt"})
    assert copy.status_code == 409 and error_code(copy) == "exists"
    mkdir = http.post(api(name), json={"type": "directory", "name": "sub"})
    assert mkdir.status_code == 409
    mkdir_on_file = http.post(api(name), json={"type": "directory", "name": "b.txt"})
    assert mkdir_on_file.status_code == 409 and (path / "b.txt").is_file()
    assert sorted(p.name for p in path.iterdir()) == ["b.txt", "sub"]


def test_moving_a_folder_onto_an_existing_one_is_a_conflict_not_500(
    server: LiveServer, folder: tuple[str, Path]
) -> None:
    name, path = folder
    for sub in ("d1", "d2"):
        (path / sub).mkdir()
        (path / sub / f"{sub}.txt").write_text(sub)
    (path / "f.txt").write_text("f")
    url = f"{server.url}{api(f'{name}/d1')}"  # a connection each: a 500 may close it
    answers = {
        "onto a non-empty folder": httpx.patch(url, json={"path": f"{name}/d2", "overwrite": True}),
        "onto a file": httpx.patch(url, json={"path": f"{name}/f.txt", "overwrite": True}),
        "onto the root": httpx.patch(url, json={"path": "", "overwrite": True}),
    }
    statuses = {case: answer.status_code for case, answer in answers.items()}
    # Onto the root is refused as a change of the root itself (403); the others are conflicts.
    assert all(status in {400, 403, 409} for status in statuses.values()), statuses
    assert statuses["onto a non-empty folder"] == 409 and statuses["onto a file"] == 409
    assert tree(path) == {"d1": None, "d1/d1.txt": b"d1", "d2": None, "d2/d2.txt": b"d2", "f.txt": b"f"}


# copy, move, delete, mkdir ----------------------------------------------------------------------------------------
def test_copy_names_copies_like_jupyter(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "x.ipynb").write_bytes(TINY)
    (path / "sub").mkdir()
    first = http.post(api(name), json={"copy_from": f"{name}/x.ipynb"})
    assert first.status_code == 201, first.text
    assert first.json()["path"] == f"{name}/x-Copy1.ipynb" and first.json()["type"] == "notebook"
    assert http.post(api(name), json={"copy_from": f"{name}/x.ipynb"}).json()["name"] == "x-Copy2.ipynb"
    named = http.post(api(f"{name}/sub"), json={"copy_from": f"{name}/x.ipynb", "name": "y.ipynb"})
    assert named.status_code == 201 and named.json()["path"] == f"{name}/sub/y.ipynb"
    (path / "x-Copy1.ipynb").unlink()  # a gap is filled first
    assert http.post(api(name), json={"copy_from": f"{name}/x.ipynb"}).json()["name"] == "x-Copy1.ipynb"
    for file in ("x-Copy1.ipynb", "x-Copy2.ipynb", "sub/y.ipynb"):
        assert (path / file).read_bytes() == TINY
    assert http.post(api(name), json={"copy_from": f"{name}/nope.ipynb"}).status_code == 404
    assert http.post(api(f"{name}/nofolder"), json={"copy_from": f"{name}/x.ipynb"}).status_code == 404
    folder_copy = http.post(api(name), json={"copy_from": f"{name}/sub"})  # folders are not copied: said so
    assert folder_copy.status_code == 422 and error_code(folder_copy) == "not_a_file", folder_copy.text
    assert http.post(api(name), json={"copy_from": f"{name}/x.ipynb", "name": "a/b"}).status_code == 400
    assert leftovers(path) == []


def test_move_rename_and_into_itself(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "a.txt").write_text("a")
    (path / "sub").mkdir()
    (path / "sub" / "deep").mkdir()
    moved = http.patch(api(f"{name}/a.txt"), json={"path": f"{name}/sub/a.txt"})
    assert moved.status_code == 200 and moved.json()["path"] == f"{name}/sub/a.txt"
    assert (path / "sub" / "a.txt").read_text() == "a" and not (path / "a.txt").exists()
    renamed = http.patch(api(f"{name}/sub"), json={"path": f"{name}/renamed"})
    assert renamed.status_code == 200 and renamed.json()["type"] == "directory"
    assert (path / "renamed" / "a.txt").read_text() == "a" and not (path / "sub").exists()
    for inside in (f"{name}/renamed/deep/x", f"{name}/renamed/x"):
        into = http.patch(api(f"{name}/renamed"), json={"path": inside})
        assert into.status_code == 400 and error_code(into) == "into_itself", inside
    same = http.patch(api(f"{name}/renamed"), json={"path": f"{name}/renamed"})
    assert same.status_code == 200
    assert http.patch(api(f"{name}/missing"), json={"path": f"{name}/x"}).status_code == 404
    assert http.patch(api(f"{name}/renamed/a.txt"), json={"path": f"{name}/no/a.txt"}).status_code == 404
    assert http.patch(api(f"{name}/renamed/a.txt"), json={"nope": 1}).status_code == 400
    assert (
        http.patch(api(f"{name}/renamed/a.txt"), content=b"[", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert tree(path) == {"renamed": None, "renamed/a.txt": b"a", "renamed/deep": None}


def test_delete_file_folders_and_links(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "a.txt").write_text("a")
    (path / "empty").mkdir()
    (path / "full" / "deeper").mkdir(parents=True)
    (path / "full" / "deeper" / "f.txt").write_text("f")
    (path / "target.txt").write_text("target")
    (path / "target_dir").mkdir()
    (path / "target_dir" / "keep.txt").write_text("keep")
    (path / "link.txt").symlink_to(path / "target.txt")
    (path / "dir_link").symlink_to(path / "target_dir", target_is_directory=True)
    assert http.delete(api(f"{name}/a.txt")).status_code == 204 and not (path / "a.txt").exists()
    assert http.delete(api(f"{name}/a.txt")).status_code == 404
    assert http.delete(api(f"{name}/empty")).status_code == 204 and not (path / "empty").exists()
    full = http.delete(api(f"{name}/full"))
    assert full.status_code == 409 and error_code(full) == "not_empty" and (path / "full/deeper/f.txt").exists()
    assert http.delete(api(f"{name}/full"), params={"recursive": "true"}).status_code == 204
    assert not (path / "full").exists()
    assert http.delete(api(f"{name}/link.txt")).status_code == 204
    assert not (path / "link.txt").is_symlink() and (path / "target.txt").read_text() == "target"
    assert http.delete(api(f"{name}/dir_link"), params={"recursive": "true"}).status_code == 204
    assert not (path / "dir_link").is_symlink() and (path / "target_dir" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in path.iterdir()) == ["target.txt", "target_dir"]


def test_a_link_that_leads_outside_can_be_deleted_but_not_followed(
    http: httpx.Client, folder: tuple[str, Path], tmp_path: Path
) -> None:
    """docs/files.md: "a symlink is removed, never its target" (found from outside: such a link was refused as
    leading outside, so nobody could remove it through the product). Renaming it stays refused."""
    name, path = folder
    outside = tmp_path / "outside"
    (outside / "inner").mkdir(parents=True)
    (outside / "secret.txt").write_text("secret")
    (path / "out_dir").symlink_to(outside, target_is_directory=True)
    (path / "out_file.txt").symlink_to(outside / "secret.txt")
    renamed = http.patch(api(f"{name}/out_dir"), json={"path": f"{name}/moved_dir"})
    assert renamed.status_code == 400 and error_code(renamed) == "path_outside_workspace"
    # what lies behind such a link is not reached by naming it
    for through in ("out_dir/secret.txt", "out_dir/inner", "out_dir/inner/"):
        assert http.delete(api(f"{name}/{through}"), params={"recursive": "true"}).status_code == 400
    assert http.get(api(f"{name}/out_dir")).status_code == 400
    assert http.delete(api(f"{name}/out_dir"), params={"recursive": "true"}).status_code == 204
    assert http.delete(api(f"{name}/out_file.txt")).status_code == 204
    assert sorted(p.name for p in path.iterdir()) == []
    assert (outside / "secret.txt").read_text() == "secret" and (outside / "inner").is_dir()  # targets untouched


def test_deleting_the_workspace_root_is_refused(live: Any) -> None:  # noqa: F811
    """DELETE /api/contents/ names the root: it must never be deleted, recursively or not."""
    server = live()
    workspace = server.settings.workspace
    before = tree(workspace)
    answers = {}
    for target in (b"/api/contents/", b"/api/contents//", b"/api/contents/.", b"/api/contents/./"):
        for query in (b"", b"?recursive=true"):
            head = b"DELETE %s%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0" % (target, query)
            answers[(target + query).decode()] = raw_request(server.port, head, b"")
            if not workspace.exists():
                break
    assert workspace.exists(), f"the whole workspace was deleted: {answers}"
    assert tree(workspace) == before
    assert all(status in {400, 403, 405} for status in answers.values()), answers


def test_mkdir(http: httpx.Client, folder: tuple[str, Path]) -> None:
    name, path = folder
    made = http.post(api(name), json={"type": "directory", "name": "new"})
    assert made.status_code == 201 and made.json()["type"] == "directory" and (path / "new").is_dir()
    untitled = http.post(api(name), json={"type": "directory"})
    assert untitled.status_code == 201 and untitled.json()["name"] == "Untitled Folder"
    model = http.put(api(f"{name}/new/by-model"), json={"type": "directory"})
    assert model.status_code == 201 and (path / "new" / "by-model").is_dir()
    assert http.post(api(f"{name}/nope"), json={"type": "directory", "name": "x"}).status_code == 404
    assert http.post(api(name), json={"type": "directory", "name": "a/b"}).status_code == 400
    assert http.post(api(name), json={"type": "directory", "name": "  "}).status_code == 400
    assert http.post(api(name), json={"type": "nonsense"}).status_code == 400
    listed = {e["name"]: e["type"] for e in http.get(api(name)).json()["content"]}
    assert listed == {"Untitled Folder": "directory", "new": "directory"}


# events -------------------------------------------------------------------------------------------------------------
@contextmanager
def subscribed(ws_url: str, *streams: str) -> Iterator[ClientConnection]:
    with connect(ws_url) as ws:
        assert json.loads(ws.recv(timeout=10))["op"] == "welcome"
        assert json.loads(ws.recv(timeout=10))["op"] == "snapshot"
        for stream in streams:
            ws.send(json.dumps({"op": "subscribe", "stream": stream}))
        ws.send('{"op":"ping"}')
        while json.loads(ws.recv(timeout=10))["op"] != "pong":
            pass
        yield ws


def file_events(ws: ClientConnection, count: int, timeout_s: float = 10) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < count:
        message = json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic())))
        if message.get("op") == "event" and message["type"] == "file.changed":
            found.append(message["data"])
    return found


def no_more_events(ws: ClientConnection) -> None:
    ws.send('{"op":"ping"}')
    while (message := json.loads(ws.recv(timeout=10)))["op"] != "pong":
        assert message.get("type") != "file.changed", message


def test_every_change_sends_a_file_changed_event(
    server: LiveServer, http: httpx.Client, folder: tuple[str, Path]
) -> None:
    name, path = folder
    (path / "gone.txt").write_text("x")
    with subscribed(server.ws_url, "user:local") as ws:
        assert http.put(api(f"{name}/a.ipynb"), content=TINY).status_code == 201
        assert http.put(api(f"{name}/a.ipynb"), params={"overwrite": 1}, content=TINY).status_code == 201
        assert (
            http.put(api(f"{name}/t.txt"), json={"type": "file", "format": "text", "content": "t"}).status_code == 201
        )
        assert http.post(api(name), json={"type": "directory", "name": "sub"}).status_code == 201
        assert http.patch(api(f"{name}/a.ipynb"), json={"path": f"{name}/sub/b.ipynb"}).status_code == 200
        assert http.post(api(name), json={"copy_from": f"{name}/sub/b.ipynb"}).status_code == 201
        assert http.delete(api(f"{name}/gone.txt")).status_code == 204
        assert http.delete(api(f"{name}/sub"), params={"recursive": 1}).status_code == 204
        # refused changes announce nothing
        assert http.put(api(f"{name}/t.txt"), content=b"x").status_code == 409
        assert http.put(api(f"{name}/bad.ipynb"), content=b"x").status_code == 422
        events = file_events(ws, 8)
        no_more_events(ws)
    assert events == [
        {"path": f"{name}/a.ipynb", "action": "created", "type": "notebook"},
        {"path": f"{name}/a.ipynb", "action": "modified", "type": "notebook"},
        {"path": f"{name}/t.txt", "action": "created", "type": "file"},
        {"path": f"{name}/sub", "action": "created", "type": "directory"},
        {"path": f"{name}/sub/b.ipynb", "action": "moved", "type": "notebook", "from": f"{name}/a.ipynb"},
        {
            "path": f"{name}/b-Copy1.ipynb",
            "action": "created",
            "type": "notebook",
            "copied_from": f"{name}/sub/b.ipynb",
        },
        {"path": f"{name}/gone.txt", "action": "deleted", "type": "file"},
        {"path": f"{name}/sub", "action": "deleted", "type": "directory"},
    ]


# races --------------------------------------------------------------------------------------------------------------
def race(count: int, action: Callable[[int], httpx.Response]) -> list[httpx.Response]:
    """Run `action(i)` for i in range(count) at once, each on its own connection."""
    barrier = threading.Barrier(count)

    def one(i: int) -> httpx.Response:
        barrier.wait(10)
        return action(i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def test_twenty_clients_racing_to_create_one_file(server: LiveServer, folder: tuple[str, Path]) -> None:
    name, path = folder

    def put(i: int) -> httpx.Response:
        return httpx.put(f"{server.url}{api(f'{name}/race.txt')}", content=f"client {i} ".encode() * 5000, timeout=30)

    answers = race(20, put)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * 19, statuses
    winner = next(i for i, a in enumerate(answers) if a.status_code == 201)
    assert (path / "race.txt").read_bytes() == f"client {winner} ".encode() * 5000
    assert leftovers(path) == [] and sorted(p.name for p in path.iterdir()) == ["race.txt"]


def test_ten_renames_racing_to_one_target(server: LiveServer, folder: tuple[str, Path]) -> None:
    name, path = folder
    for i in range(10):
        (path / f"src{i}.txt").write_text(f"source {i}")

    def patch(i: int) -> httpx.Response:
        return httpx.patch(f"{server.url}{api(f'{name}/src{i}.txt')}", json={"path": f"{name}/target.txt"}, timeout=30)

    answers = race(10, patch)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] + [409] * 9, statuses
    winner = next(i for i, a in enumerate(answers) if a.status_code == 200)
    assert (path / "target.txt").read_text() == f"source {winner}"
    assert sorted(p.name for p in path.iterdir()) == sorted(
        ["target.txt"] + [f"src{i}.txt" for i in range(10) if i != winner]
    )


def test_racing_deletes_of_one_file(server: LiveServer, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "doomed.txt").write_text("x")
    answers = race(10, lambda i: httpx.delete(f"{server.url}{api(f'{name}/doomed.txt')}", timeout=30))
    assert sorted(a.status_code for a in answers) == [204] + [404] * 9
    assert list(path.iterdir()) == []


def test_racing_recursive_deletes_of_one_folder(server: LiveServer, folder: tuple[str, Path]) -> None:
    name, path = folder
    for i in range(3000):  # rmtree takes a while: the other requests arrive meanwhile
        (path / "doomed" / f"d{i % 30}").mkdir(parents=True, exist_ok=True)
        (path / "doomed" / f"d{i % 30}" / f"f{i}.txt").write_text("x")
    url = f"{server.url}{api(f'{name}/doomed')}"
    answers = race(10, lambda i: httpx.delete(url, params={"recursive": "true"}, timeout=30))
    assert sorted(a.status_code for a in answers) == [204] + [404] * 9, [a.status_code for a in answers]
    assert list(path.iterdir()) == []


def test_racing_copies_get_distinct_names(server: LiveServer, folder: tuple[str, Path]) -> None:
    name, path = folder
    (path / "x.ipynb").write_bytes(TINY)
    answers = race(
        10, lambda i: httpx.post(f"{server.url}{api(name)}", json={"copy_from": f"{name}/x.ipynb"}, timeout=30)
    )
    assert [a.status_code for a in answers] == [201] * 10
    assert sorted(a.json()["name"] for a in answers) == sorted(f"x-Copy{n}.ipynb" for n in range(1, 11))
    assert all((path / f"x-Copy{n}.ipynb").read_bytes() == TINY for n in range(1, 11))


# per-user areas (auth mode token) -----------------------------------------------------------------------------------
@pytest.fixture
def token_server(live: Any) -> tuple[LiveServer, dict[str, dict[str, str]]]:  # noqa: F811
    server = live(auth_mode="token")
    tokens = {name: bearer(make_token(server, name)) for name in ("alice", "bob")}
    tokens["admin"] = bearer(make_token(server, "admin", admin=True))
    return server, tokens


def test_token_mode_confines_each_user_to_home_and_shared(token_server: tuple[LiveServer, Any]) -> None:
    server, tokens = token_server
    workspace = server.settings.workspace
    alice, bob = tokens["alice"], tokens["bob"]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get(api("")).status_code == 401
        assert http.put(api("users/bob/z.ipynb"), content=TINY, headers=bob).status_code == 201
        assert http.put(api("users/alice/x.ipynb"), content=TINY, headers=alice).status_code == 201
        assert http.put(api("shared/y.ipynb"), content=TINY, headers=alice).status_code == 201
        assert (workspace / "users/alice/x.ipynb").read_bytes() == TINY == (workspace / "shared/y.ipynb").read_bytes()
        # writes elsewhere: 403
        for target in (
            "users/bob/z.ipynb",
            "users/bob/new.ipynb",
            "root.ipynb",
            "users/new.ipynb",
            "users/carol/a.txt",
        ):
            answer = http.put(api(target), params={"overwrite": 1}, content=TINY, headers=alice)
            assert answer.status_code == 403, (target, answer.status_code)
        assert http.post(api(""), json={"type": "directory", "name": "top"}, headers=alice).status_code == 403
        assert http.post(api("users/alice"), json={"copy_from": "tiny.ipynb"}, headers=alice).status_code == 404
        assert (
            http.patch(api("users/bob/z.ipynb"), json={"path": "users/alice/z.ipynb"}, headers=alice).status_code == 403
        )
        assert (
            http.patch(api("users/alice/x.ipynb"), json={"path": "users/bob/x.ipynb"}, headers=alice).status_code == 403
        )
        assert http.patch(api("users/alice"), json={"path": "users/alice2"}, headers=alice).status_code == 403
        assert http.delete(api("users/bob/z.ipynb"), headers=alice).status_code == 403
        assert http.delete(api("users/alice"), params={"recursive": 1}, headers=alice).status_code == 403
        assert http.delete(api("shared"), params={"recursive": 1}, headers=alice).status_code == 403
        # bob's files do not exist for alice
        for target in ("users/bob/z.ipynb", "users/bob", "tiny.ipynb"):
            assert http.get(api(target), headers=alice).status_code == 404, target
        assert http.get("/files/users/bob/z.ipynb", headers=alice).status_code == 404
        assert http.post(api("users/alice"), json={"copy_from": "users/bob/z.ipynb"}, headers=alice).status_code == 404
        # listings show only the way to alice's areas
        root = http.get(api(""), headers=alice).json()
        assert sorted(e["name"] for e in root["content"]) == ["shared", "users"]
        assert all(e["writable"] is False for e in root["content"])
        users = http.get(api("users"), headers=alice).json()
        assert [e["name"] for e in users["content"]] == ["alice"]
        home = http.get(api("users/alice"), headers=alice).json()
        assert [(e["name"], e["writable"]) for e in home["content"]] == [("x.ipynb", True)]
        assert [e["name"] for e in http.get(api("shared"), headers=bob).json()["content"]] == ["y.ipynb"]
        # moves and copies inside the areas work
        copied = http.post(api("users/alice"), json={"copy_from": "shared/y.ipynb"}, headers=alice)
        assert copied.status_code == 201 and copied.json()["path"] == "users/alice/y-Copy1.ipynb"
        assert (
            http.patch(
                api("users/alice/y-Copy1.ipynb"), json={"path": "shared/from-alice.ipynb"}, headers=alice
            ).status_code
            == 200
        )
        assert http.get("/files/shared/from-alice.ipynb", headers=bob).content == TINY
        # admins see and change everything
        assert "tiny.ipynb" in {e["name"] for e in http.get(api(""), headers=tokens["admin"]).json()["content"]}
        assert http.get(api("users/bob/z.ipynb"), headers=tokens["admin"]).status_code == 200
    assert (workspace / "users/bob/z.ipynb").read_bytes() == TINY


def test_token_mode_a_user_cannot_delete_the_root(token_server: tuple[LiveServer, Any]) -> None:
    server, tokens = token_server
    workspace = server.settings.workspace
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.put(api("users/bob/keep.txt"), content=b"bob's", headers=tokens["bob"]).status_code == 201
        answers = [
            http.delete(api(""), headers=tokens["alice"]).status_code,
            http.delete(api(""), params={"recursive": "true"}, headers=tokens["alice"]).status_code,
            http.put(api(""), content=b"x", headers=tokens["alice"]).status_code,
        ]
    assert (workspace / "users/bob/keep.txt").exists(), f"alice deleted the workspace: {answers}"
    assert answers == [403, 403, 403]


def test_token_mode_file_events_go_to_the_owner_or_everyone(token_server: tuple[LiveServer, Any]) -> None:
    server, tokens = token_server
    alice, bob = (tokens[n]["Authorization"].removeprefix("Bearer ") for n in ("alice", "bob"))
    with (
        subscribed(f"{server.ws_url}?token={alice}", "user:alice", "broadcast") as alice_ws,
        subscribed(f"{server.ws_url}?token={bob}", "user:bob", "broadcast") as bob_ws,
        httpx.Client(base_url=server.url, timeout=30, headers=tokens["alice"]) as http,
    ):
        assert http.put(api("users/alice/mine.txt"), content=b"1").status_code == 201
        assert http.put(api("shared/ours.txt"), content=b"2").status_code == 201
        assert file_events(alice_ws, 2) == [
            {"path": "users/alice/mine.txt", "action": "created", "type": "file"},
            {"path": "shared/ours.txt", "action": "created", "type": "file"},
        ]
        assert file_events(bob_ws, 1) == [{"path": "shared/ours.txt", "action": "created", "type": "file"}]
        no_more_events(bob_ws)


@pytest.mark.kernel
def test_token_mode_jobs_only_on_notebooks_in_the_users_areas(token_server: tuple[LiveServer, Any]) -> None:
    server, tokens = token_server
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.put(api("users/alice/x.ipynb"), content=TINY, headers=tokens["alice"]).status_code == 201
        assert http.put(api("users/bob/secret.ipynb"), content=TINY, headers=tokens["bob"]).status_code == 201
        job = http.post("/api/jobs", json={"notebook": "users/alice/x.ipynb"}, headers=tokens["alice"])
        assert job.status_code == 202, job.text
        for notebook_path in ("users/bob/secret.ipynb", "tiny.ipynb", "users/bob/nothing.ipynb"):
            refused = http.post("/api/jobs", json={"notebook": notebook_path}, headers=tokens["alice"])
            assert refused.status_code == 404, (notebook_path, refused.text)
        deadline = time.monotonic() + 120
        state = job.json()["state"]
        while state in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            state = http.get(f"/api/jobs/{job.json()['id']}", headers=tokens["alice"]).json()["state"]
        assert state == "succeeded"


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_an_upload_cut_off_by_its_client_is_one_line_of_log_and_saves_nothing(
    server: LiveServer, folder: tuple[str, Path], caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """Found from outside: each one logged "unhandled error on PUT" with ClientDisconnect's traceback."""
    name, path = folder
    host, port = server.url.removeprefix("http://").split(":")
    if kind == "raw":
        head = "Content-Type: application/octet-stream\r\nContent-Length: 100000\r\n"
        body = b"x" * 1000
    else:
        head = "Content-Type: multipart/form-data; boundary=cut\r\nContent-Length: 100000\r\n"
        body = b'--cut\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n\r\n' + b"x" * 1000
    caplog.set_level("INFO", logger="nbrelay")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(f"PUT /api/contents/{name}/cut.bin HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode() + body)
        time.sleep(0.3)
    deadline = time.monotonic() + 10
    while "cut off by its client" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    assert "unhandled error" not in caplog.text and "Traceback" not in caplog.text, caplog.text
    assert list(path.iterdir()) == []  # nothing saved, no part left


@pytest.mark.parametrize("overwrite", ["false", "no", 0, 1, {}, None])
def test_overwrite_that_is_no_boolean_is_refused_and_replaces_nothing(
    http: httpx.Client, folder: tuple[str, Path], overwrite: Any
) -> None:
    """Found from outside: "overwrite": "false" was read as true and replaced the target."""
    name, path = folder
    (path / "a.txt").write_text("A")
    (path / "b.txt").write_text("B")
    answer = http.patch(api(f"{name}/a.txt"), json={"path": f"{name}/b.txt", "overwrite": overwrite})
    assert answer.status_code == 422, answer.text
    assert "'overwrite' is true or false" in answer.json()["error"]["message"]
    assert (path / "a.txt").read_text() == "A" and (path / "b.txt").read_text() == "B"
