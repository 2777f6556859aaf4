import os
import time
from pathlib import Path

import pytest

from nbrelay.errors import NotFound, PathRefused, Unprocessable
from nbrelay.files import Workspace, atomic_write, read_regular, sweep_leftovers


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.ipynb").write_text("{}")
    (tmp_path / "outside.ipynb").write_text("{}")
    return Workspace(root)


ESCAPES = [
    "../outside.ipynb",
    "sub/../../outside.ipynb",
    "/etc/passwd",
    "//etc/passwd",
    "C:/Windows/win.ini",
    "%2e%2e/outside.ipynb",
    "%2E%2E%2Foutside.ipynb",
    "%252e%252e%252foutside.ipynb",
    "..%2foutside.ipynb",
    "..\\outside.ipynb",
    "sub\\..\\..\\outside.ipynb",
    "a\x00.ipynb",
    "a\n.ipynb",
    "x" * 300 + ".ipynb",
    "..",
    "./../outside.ipynb",
    "",
    "   ",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_paths_leaving_the_workspace_are_refused(ws: Workspace, path: str) -> None:
    with pytest.raises(PathRefused) as caught:
        ws.resolve(path)
    assert caught.value.status == 400


def test_symlink_pointing_outside_is_refused(ws: Workspace, tmp_path: Path) -> None:
    os.symlink(tmp_path / "outside.ipynb", ws.root / "link.ipynb")
    os.symlink(tmp_path, ws.root / "linkdir")
    for path in ("link.ipynb", "linkdir/outside.ipynb"):
        with pytest.raises(PathRefused) as caught:
            ws.resolve(path)
        assert caught.value.code == "path_outside_workspace"


def test_a_link_itself_may_lead_outside_but_nothing_through_it(ws: Workspace, tmp_path: Path) -> None:
    os.symlink(tmp_path / "outside.ipynb", ws.root / "link.ipynb")
    os.symlink(tmp_path, ws.root / "linkdir")
    (ws.root / "linkdir2").symlink_to(ws.root / "linkdir")  # a link to a link that leads outside
    assert ws.resolve("link.ipynb", link_itself=True) == ws.root / "link.ipynb"
    assert ws.resolve("linkdir", link_itself=True) == ws.root / "linkdir"
    for path in ("linkdir/outside.ipynb", "linkdir2/outside.ipynb", "linkdir/x/y", "../x"):
        with pytest.raises(PathRefused):
            ws.resolve(path, link_itself=True)


def test_symlink_inside_is_followed(ws: Workspace) -> None:
    os.symlink(ws.root / "sub" / "a.ipynb", ws.root / "b.ipynb")
    assert ws.resolve("b.ipynb") == ws.root / "b.ipynb"


def test_plain_paths_resolve_inside(ws: Workspace) -> None:
    assert ws.resolve("sub/a.ipynb") == ws.root / "sub" / "a.ipynb"
    assert ws.resolve("./sub//a.ipynb") == ws.root / "sub" / "a.ipynb"
    assert ws.resolve("new folder/n.ipynb") == ws.root / "new folder" / "n.ipynb"
    assert ws.relative(ws.resolve("sub/a.ipynb")) == "sub/a.ipynb"


def test_must_exist(ws: Workspace) -> None:
    with pytest.raises(NotFound):
        ws.resolve("nope.ipynb", must_exist=True)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "report.html"
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]


def test_atomic_write_failure_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    atomic_write(target, b"old")

    with pytest.raises(TypeError):
        atomic_write(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_a_long_name_is_written_atomically(tmp_path: Path) -> None:
    """The temporary file is named by the service: one named after a 255-byte target could not be made."""
    target = tmp_path / ("r" * 250 + ".html")
    atomic_write(target, b"whole")
    assert target.read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_the_sweep_removes_what_cut_off_writes_left_and_nothing_else(tmp_path: Path) -> None:
    stale = [
        tmp_path / ".nbrelay-abcd1234.upload",
        tmp_path / "sub" / ".nbrelay-x_9y8z7w.tmp",
        tmp_path / "sub" / ".report.ipynb.k3j9x_2a.upload",  # as earlier versions named an upload's file
    ]
    kept = [
        tmp_path / ".nbrelay-fresh123.upload",  # an upload under way: written to a moment ago
        tmp_path / ".hidden.txt",
        tmp_path / "notes.upload",
        tmp_path / "sub" / ".config.tmp",
    ]
    for path in stale + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    an_hour_ago = time.time() - 3700
    for path in [*stale, *kept[1:]]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert sweep_leftovers(tmp_path, older_than_s=3600) == 3
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_read_regular_refuses_a_pipe_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(Unprocessable, match="pipe is not a regular file"):
        read_regular(tmp_path / "pipe", "pipe")
    (tmp_path / "file").write_bytes(b"data")
    assert read_regular(tmp_path / "file", "file") == b"data"
