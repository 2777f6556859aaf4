"""Path escapes against every contents route, sent byte-exact over a raw socket.

Every attempt must be refused with 400, 403 or 404 (never 2xx, never 500), and afterwards nothing outside the
workspace may have changed: not the canary file, not the files behind the symlinks, and nothing new may exist.

Every escape attempt aims at `<tmp>/outside` (never at system files, except for reads), so that a regression
could only ever harm the test's own temporary folder.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import httpx
import pytest

from tests.conftest import NOTEBOOKS
from tests.live import LiveServer
from tests.push.transports.conftest import live  # noqa: F401

REFUSED = {400, 403, 404}
MARK = f"nbrescape{uuid.uuid4().hex[:8]}"  # any file with this in its name is an escape that worked
CANARY = b"canary: must never change\n"
VICTIM = b"a file inside the workspace\n"


# the corpus ---------------------------------------------------------------------------------------------------------
# Templates: {t} is the target below <tmp> ("outside/canary.txt", "outside" or "outside/<MARK>"), {tmp} the name of
# <tmp>, {abs} the absolute path of <tmp> without its leading "/". The workspace is <tmp>/workspace, so "../{t}" is
# the target, naively. Strings go on the wire as written: "%" sequences are sent as they are, and only what cannot
# appear raw in a request line (controls, space, non-ASCII, "#", "?") is percent-encoded by `wire()`.
TEMPLATES: list[tuple[str, str]] = [
    ("dotdot", "../{t}"),
    ("dotdot-twice", "../../{tmp}/{t}"),
    ("dotdot-to-root", "../" * 30 + "{abs}/{t}"),
    ("absolute", "/{abs}/{t}"),
    ("double-slash", "//{abs}/{t}"),
    ("pct-dots", "%2e%2e/{t}"),
    ("pct-dots-upper", "%2E%2E/{t}"),
    ("pct-dots-slash", "%2e%2e%2f{t}"),
    ("dots-pct-slash", "..%2f{t}"),
    ("double-encoded", "%252e%252e%252f{t}"),
    ("triple-encoded", "%25252e%25252e%25252f{t}"),
    ("overlong-utf8-slash", "..%c0%af{t}"),
    ("overlong-utf8-dots", "%c0%ae%c0%ae/{t}"),
    ("iis-unicode", "%u002e%u002e/{t}"),
    ("backslash", "..\\{t}"),
    ("backslash-leading", "\\..\\{t}"),
    ("pct-backslash", "..%5c{t}"),
    ("inner-dotdot", "a/../../{t}"),
    ("dot-dotdot", "./../{t}"),
    ("dot-inner-dotdot", "x/./../../y/../{t}"),
    ("dotdot-double-slash", "..//{t}"),
    ("dots-in-area", "users/../../{t}"),
    ("nul-encoded", "%00/../{t}"),
    ("nul-in-name", "..\x00/{t}"),
    ("newline", "..\n/{t}"),
    ("newline-encoded", "..%0a/{t}"),
    ("cr-encoded", "%0d/../{t}"),
    ("tab", "..\t/{t}"),
    ("long-name", "a" * 300 + "/../../{t}"),
    ("long-path", "x/" * 2100 + "../" * 2101 + "{t}"),
    ("drive", "C:/{abs}/{t}"),
    ("drive-backslash", "C:\\{abs}\\{t}"),
    ("unc", "\\\\server\\share\\{t}"),
    ("one-dot-leader", "\u2024\u2024/{t}"),
    ("fullwidth-dots", "\uff0e\uff0e/{t}"),
    ("semicolon", "..;/{t}"),
    ("trailing-slash", "../{t}/"),
    ("trailing-dot", "../{t}/."),
]

# Reads may aim at real system files: nothing can change them.
READ_ONLY = [
    ("etc-passwd-relative", "../../etc/passwd"),
    ("etc-passwd-absolute", "/etc/passwd"),
    ("etc-passwd-deep", "../" * 40 + "etc/passwd"),
    ("etc-double-slash", "//etc"),
    ("proc-environ", "/proc/self/environ"),
]

# Names for POST {"copy_from", "name"} and {"type": "directory", "name"}: no "/" is allowed there at all.
NAMES: list[tuple[str, str]] = [
    ("dotdot", ".."),
    ("pct-dots", "%2e%2e"),
    ("double-encoded", "%252e%252e"),
    ("backslash", "..\\outside\\" + MARK),
    ("nul", f"{MARK}\x00"),
    ("newline", f"..\n{MARK}"),
    ("long", "n" * 300),
    ("unc", f"\\\\server\\share\\{MARK}"),
    ("slash", f"../outside/{MARK}"),
]
# Only in the root: "C:x" is a fine name in a sub-folder, and file_link exists only in the root.
ROOT_NAMES = [("drive", f"C:{MARK}"), ("file-symlink", "file_link"), ("dir-symlink-file", "out_link")]


@dataclass(frozen=True)
class Attempt:
    id: str
    path: str


def attempts(tmp: Path, target: str) -> list[Attempt]:
    fields = {"t": target, "tmp": tmp.name, "abs": str(tmp).lstrip("/")}
    found = [Attempt(name, template.format(**fields)) for name, template in TEMPLATES]
    # Through the symlinks in the workspace: out_link -> <tmp>/outside, file_link -> <tmp>/outside/canary.txt.
    inside = target.removeprefix("outside").lstrip("/")
    link = f"out_link/{inside}" if inside else "out_link"
    found += [
        Attempt("symlink", link),
        Attempt("symlink-trailing-slash", f"{link}/"),
        Attempt("symlink-dot", f"./{link}"),
        Attempt("symlink-roundtrip", f"out_link/../{link}"),
        Attempt("symlink-double-slash", f"out_link//{inside}" if inside else "out_link//"),
    ]
    if target.endswith("canary.txt"):
        found += [Attempt("file-symlink", "file_link"), Attempt("file-symlink-trailing-slash", "file_link/")]
    assert len(found) >= 30
    return found


# byte-exact HTTP ----------------------------------------------------------------------------------------------------
def wire(path: str) -> bytes:
    """The request-target bytes for a path: as written, except what cannot appear raw in a request line."""
    out = bytearray()
    for byte in path.encode("utf-8", "surrogatepass"):
        if byte <= 0x20 or byte >= 0x7F or byte in b"#?":
            out += b"%%%02X" % byte
        else:
            out.append(byte)
    return bytes(out)


def send(port: int, method: str, target: bytes, body: bytes = b"", headers: dict[str, str] | None = None) -> int:
    """One request on a fresh connection, the request line exactly `target`; the status (0: closed unanswered)."""
    head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % (method.encode(), target)
    head += b"Content-Length: %d\r\n" % len(body)
    for key, value in (headers or {}).items():
        head += f"{key}: {value}\r\n".encode("latin-1")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"\r\n" + body)
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
        except (http.client.RemoteDisconnected, ConnectionResetError):
            return 0
        response.read()
        return response.status


def json_strings(path: str) -> list[str]:
    """In a JSON body there is no URL decoding: send the string as written and as a URL would deliver it (when
    that decodes to UTF-8: "..%c0%af" is not a "../" in any decoding a server should do)."""
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        decoded = path
    return list(dict.fromkeys([path, decoded]))


def multipart(data: bytes, filename: str) -> tuple[bytes, dict[str, str]]:
    request = httpx.Request("PUT", "http://x/", files={"file": (filename, data, "application/octet-stream")})
    return request.read(), {"Content-Type": request.headers["content-type"]}


# the world outside --------------------------------------------------------------------------------------------------
def snapshot(tmp: Path, skip: set[Path]) -> dict[str, tuple[Any, ...]]:
    """Everything below <tmp> but the workspace and the data dir, and the names next to <tmp> and above it."""
    found: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(tmp, followlinks=False):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in dirs + files:
            path = here / name
            info = path.lstat()
            key = path.relative_to(tmp).as_posix()
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = ("dir",)
            else:
                found[key] = ("file", info.st_ino, info.st_size, info.st_mtime_ns, path.read_bytes())
    for level, folder in enumerate((tmp.parent, tmp.parent.parent)):
        found[f"<parent {level}>"] = ("names", tuple(sorted(p.name for p in folder.iterdir() if MARK in p.name)))
    found["<etc/passwd>"] = ("file", os.stat("/etc/passwd").st_mtime_ns)
    return found


@dataclass
class World:
    """The outside folder with a canary, symlinks to it from the workspace, and what everything looked like."""

    tmp: Path
    workspace: Path

    def __post_init__(self) -> None:
        outside = self.tmp / "outside"
        (outside / "inner").mkdir(parents=True)
        (outside / "canary.txt").write_bytes(CANARY)
        (outside / "inner" / "deep.bin").write_bytes(bytes(range(256)))
        (self.workspace / "out_link").symlink_to(outside, target_is_directory=True)
        (self.workspace / "file_link").symlink_to(outside / "canary.txt")
        (self.workspace / "victim.txt").write_bytes(VICTIM)
        (self.workspace / "users").mkdir(exist_ok=True)
        self.skip = {self.workspace, self.tmp / "data"}
        self.before = snapshot(self.tmp, self.skip)

    def assert_unchanged(self) -> None:
        after = snapshot(self.tmp, self.skip)
        changed = {key for key in self.before.keys() | after.keys() if self.before.get(key) != after.get(key)}
        assert not changed, f"outside the workspace changed: {sorted(changed)}"
        assert (self.tmp / "outside" / "canary.txt").read_bytes() == CANARY
        assert (self.workspace / "out_link").is_symlink() and (self.workspace / "file_link").is_symlink()
        assert (self.workspace / "victim.txt").read_bytes() == VICTIM
        assert not list(self.workspace.rglob(f"*{MARK}*")), "a MARK name appeared in the workspace"


@dataclass
class Setup:
    server: LiveServer
    world: World


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """One server (auth mode none: everything writable) for every route test of the module."""
    tmp = tmp_path_factory.mktemp("escapes")
    workspace = tmp / "workspace"
    shutil.copytree(NOTEBOOKS, workspace)
    world = World(tmp, workspace)
    server = LiveServer(workspace, tmp / "data").start()
    yield Setup(server, world)
    server.stop()
    world.assert_unchanged()


class Probe:
    """Runs attempts against one live server and collects every answer that is not a refusal."""

    def __init__(self, server: LiveServer, tmp: Path):
        self.port = server.port
        self.tmp = tmp
        self.bad: list[str] = []
        self.count = 0

    def check(self, label: str, status: int) -> None:
        self.count += 1
        if status not in REFUSED:
            self.bad.append(f"{status} {label}")

    def url(self, method: str, prefix: str, path: str, query: str = "", **kw: Any) -> None:
        target = prefix.encode() + wire(path) + (b"?" + query.encode() if query else b"")
        self.check(f"{method} {target!r}", send(self.port, method, target, **kw))

    def body(self, method: str, target: str, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        status = send(self.port, method, target.encode(), data, {"Content-Type": "application/json"})
        self.check(f"{method} {target} {payload!r}", status)

    def done(self) -> None:
        assert self.count >= 30
        assert not self.bad, f"{len(self.bad)} of {self.count} escape attempts were not refused:\n" + "\n".join(
            self.bad
        )


@pytest.fixture
def probe(setup: Setup) -> Iterator[Probe]:
    found = Probe(setup.server, setup.world.tmp)
    yield found
    setup.world.assert_unchanged()  # after every route, not only at the end


FILE, DIR, NEW = "outside/canary.txt", "outside", f"outside/{MARK}"
JSON = {"Content-Type": "application/json"}


# the routes ---------------------------------------------------------------------------------------------------------
def test_get_contents(probe: Probe) -> None:
    for target in (FILE, DIR):
        for attempt in attempts(probe.tmp, target):
            for query in ("", "content=0", "format=text", "format=base64", "format=json"):
                probe.url("GET", "/api/contents/", attempt.path, query)
    for _, path in READ_ONLY:
        probe.url("GET", "/api/contents/", path)
        probe.url("GET", "/api/contents/", path, "format=base64")
    probe.done()


def test_get_files(probe: Probe) -> None:
    for target in (FILE, "outside/inner/deep.bin"):
        for attempt in attempts(probe.tmp, target):
            probe.url("GET", "/files/", attempt.path)
    for _, path in READ_ONLY:
        probe.url("GET", "/files/", path)
    probe.done()


def test_put_raw(probe: Probe) -> None:
    for target in (FILE, NEW, f"{NEW}.ipynb"):
        for attempt in attempts(probe.tmp, target):
            probe.url("PUT", "/api/contents/", attempt.path, "overwrite=true", body=b"pwned")
            probe.url("PUT", "/api/contents/", attempt.path, body=b"pwned")
    probe.done()


def test_put_json_model(probe: Probe) -> None:
    headers = {"Content-Type": "application/json"}
    models = [
        {"type": "file", "format": "text", "content": "pwned"},
        {"type": "file", "format": "base64", "content": base64.b64encode(b"pwned").decode()},
        {"type": "notebook", "format": "json", "content": {"cells": [], "metadata": {}, "nbformat": 4}},
    ]
    for target in (FILE, NEW):
        for attempt in attempts(probe.tmp, target):
            for model in models:
                body = json.dumps(model).encode()
                probe.url("PUT", "/api/contents/", attempt.path, "overwrite=true", body=body, headers=headers)
    for attempt in attempts(probe.tmp, NEW):  # a folder
        body = json.dumps({"type": "directory"}).encode()
        probe.url("PUT", "/api/contents/", attempt.path, body=body, headers=headers)
    probe.done()


def test_put_multipart(probe: Probe) -> None:
    for target in (FILE, NEW):
        for attempt in attempts(probe.tmp, target):
            body, headers = multipart(b"pwned", "canary.txt")
            probe.url("PUT", "/api/contents/", attempt.path, "overwrite=true", body=body, headers=headers)
    # The multipart file name is never used as a path: the URL names the file (or the part is refused).
    for attempt in attempts(probe.tmp, FILE):
        body, headers = multipart(b"fine", attempt.path)
        status = send(probe.port, "PUT", b"/api/contents/named-by-url.txt", body, headers)
        assert status in {201, 400}, attempt
        if status == 201:
            assert send(probe.port, "DELETE", b"/api/contents/named-by-url.txt") == 204
    probe.done()


def test_patch_as_source(probe: Probe) -> None:
    for target in (FILE, DIR):
        for attempt in attempts(probe.tmp, target):
            for body in ({"path": f"{MARK}-moved"}, {"path": f"{MARK}-moved", "overwrite": True}):
                data = json.dumps(body).encode()
                probe.url("PATCH", "/api/contents/", attempt.path, body=data, headers=JSON)
    probe.done()


def test_patch_as_target(probe: Probe) -> None:
    for target in (FILE, NEW, DIR):
        for attempt in attempts(probe.tmp, target):
            for new in json_strings(attempt.path):
                probe.body("PATCH", "/api/contents/victim.txt", {"path": new})
                probe.body("PATCH", "/api/contents/victim.txt", {"path": new, "overwrite": True})
    probe.done()


def test_post_copy_from_as_source(probe: Probe) -> None:
    for target in (FILE, "outside/inner/deep.bin"):
        for attempt in attempts(probe.tmp, target):
            for source in json_strings(attempt.path):
                probe.body("POST", "/api/contents", {"copy_from": source})
                probe.body("POST", "/api/contents/", {"copy_from": source, "name": f"{MARK}.txt"})
    for _, path in READ_ONLY:
        probe.body("POST", "/api/contents", {"copy_from": path, "name": f"{MARK}.txt"})
    probe.done()


def test_post_copy_into_outside_folder(probe: Probe) -> None:
    for attempt in attempts(probe.tmp, DIR) + attempts(probe.tmp, "outside/inner"):
        for body in ({"copy_from": "victim.txt"}, {"copy_from": "victim.txt", "name": f"{MARK}.txt"}):
            data = json.dumps(body).encode()
            probe.url("POST", "/api/contents/", attempt.path, body=data, headers=JSON)
    probe.done()


def test_post_copy_with_name(probe: Probe) -> None:
    for _, name in NAMES + ROOT_NAMES:
        probe.body("POST", "/api/contents", {"copy_from": "victim.txt", "name": name})
        probe.body("POST", "/api/contents/out_link", {"copy_from": "victim.txt", "name": name})
    for _, name in NAMES:  # in a real folder too
        probe.body("POST", "/api/contents/users", {"copy_from": "victim.txt", "name": name})
    probe.done()


def test_post_mkdir(probe: Probe) -> None:
    headers = {"Content-Type": "application/json"}
    for attempt in attempts(probe.tmp, DIR) + attempts(probe.tmp, "outside/inner"):
        for body in ({"type": "directory", "name": MARK}, {"type": "directory"}):
            probe.url("POST", "/api/contents/", attempt.path, body=json.dumps(body).encode(), headers=headers)
    for _, name in NAMES + ROOT_NAMES:
        probe.body("POST", "/api/contents", {"type": "directory", "name": name})
    for _, name in NAMES:
        probe.body("POST", "/api/contents/users", {"type": "directory", "name": name})
    probe.done()


def names_a_link_itself(path: str) -> bool:
    """A DELETE of the link itself removes the link, never its target (docs/files.md; tests/api/test_contents.py
    holds that): not an escape, and it would take this module's links away."""
    return path.removeprefix("./").strip("/") in ("out_link", "file_link")


def test_delete(probe: Probe) -> None:
    for target in (FILE, "outside/inner/deep.bin", "outside/inner", DIR):
        for attempt in attempts(probe.tmp, target):
            if names_a_link_itself(attempt.path):
                continue
            probe.url("DELETE", "/api/contents/", attempt.path)
            probe.url("DELETE", "/api/contents/", attempt.path, "recursive=true")
    probe.done()


def test_raw_bytes_the_http_layer_refuses(probe: Probe) -> None:
    """Bytes no client should send raw (NUL, CR/LF, DEL, non-ASCII, space): refused before or at the route."""
    targets = [
        b"/api/contents/..\x00/outside/canary.txt",
        b"/files/\x00../outside/canary.txt",
        b"/api/contents/\xe2\x80\xa4\xe2\x80\xa4/outside/canary.txt",
        b"/api/contents/\xc0\xaf../outside/canary.txt",
        b"/api/contents/..\xc0\xafoutside/canary.txt",
        b"/api/contents/.. /outside/canary.txt",
        b"/api/contents/..\x7f/outside/canary.txt",
        b"/api/contents/..\\outside\\canary.txt",
        b"/api/contents/..\t/outside/canary.txt",
    ]
    for target in targets:
        for method in ("GET", "PUT", "DELETE", "PATCH"):
            status = send(probe.port, method, target, b"{}", {"Content-Type": "application/json"})
            probe.check(f"{method} {target!r}", status or 400)  # a connection closed unanswered is a refusal too
    probe.done()


def test_dot_is_not_a_name(setup: Setup) -> None:
    """ "." names the folder itself, not a new file in it: a bad name (400), not a conflict with the folder."""
    answers = {}
    for folder in ("/api/contents", "/api/contents/users"):
        for body in ({"copy_from": "victim.txt", "name": "."}, {"type": "directory", "name": "."}):
            data = json.dumps(body).encode()
            answers[f"POST {folder} {body}"] = send(setup.server.port, "POST", folder.encode(), data, JSON)
    assert answers == dict.fromkeys(answers, 400)
    setup.world.assert_unchanged()


# the identity as a path -------------------------------------------------------------------------------------------
def test_header_user_names_cannot_leave_the_users_folder(live: Any, tmp_path: Path, workspace: Path) -> None:  # noqa: F811
    """In auth mode header the user name from the proxy becomes a folder, users/<name>: a name that is not a plain
    name must be refused, never turned into a folder outside users/ or inside another user's home."""
    world = World(tmp_path, workspace)
    (workspace / "users" / "a").mkdir()
    server = live(auth_mode="header")
    answers = {}
    for name in (f"../../outside/{MARK}", f"../{MARK}", "a/b", "a/../../outside"):
        with httpx.Client(base_url=server.url, headers={"X-Forwarded-User": name}, timeout=30) as http:
            listing = http.get("/api/contents/")
            upload = http.put(f"/api/contents/users/{quote(name, safe='/')}/{MARK}.txt", content=b"pwned")
        answers[name] = (listing.status_code, upload.status_code)
    homes = sorted(p.relative_to(workspace / "users").as_posix() for p in (workspace / "users").rglob("*"))
    world.assert_unchanged()
    assert homes == ["a"], "a user name made folders or files in users/ (another user's home included)"
    refused = {name: codes for name, codes in answers.items() if codes[0] in {400, 401, 403} and codes[1] >= 400}
    assert refused == answers, f"user names that were not refused: {answers}"
