"""The private runtime folder: kernel connection files and sockets of an instance stay in a folder only its user
enters, not in the shared /tmp, and what a killed instance left is removed at the next start."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbrelay.runtime import clean_dead, make_runtime_dir, remove_runtime_dir


def test_a_runtime_folder_is_private_and_found_again_from_the_data_folder(tmp_path: Path) -> None:
    folder = make_runtime_dir(tmp_path)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    link = tmp_path / "runtime" / str(os.getpid())
    assert link.is_symlink() and link.resolve() == folder.resolve()
    assert clean_dead(tmp_path) == 0  # this process is alive: its folder stays
    remove_runtime_dir(tmp_path, folder)
    assert not folder.exists() and not link.exists()


def test_what_a_dead_instance_left_is_removed(tmp_path: Path) -> None:
    left = tmp_path / "left-behind"
    left.mkdir()
    gone = tmp_path / "nbrelay-dead"
    gone.mkdir()
    (gone / "kernel-1.json").write_text('{"key": "secret"}')
    (tmp_path / "runtime").mkdir()
    dead_pid = 2**22 + 12345  # above pid_max's default: no process has it
    (tmp_path / "runtime" / str(dead_pid)).symlink_to(gone)
    (tmp_path / "runtime" / str(dead_pid + 1)).symlink_to(left)  # not one of ours: the link goes, the folder stays
    assert clean_dead(tmp_path) == 2
    assert not gone.exists() and left.exists()
    assert list((tmp_path / "runtime").iterdir()) == []


@pytest.mark.kernel
def test_a_killed_servers_kernel_secrets_are_gone_after_the_next_start(server_factory: Any) -> None:
    server = server_factory(workers=1)
    response = httpx.post(f"{server.url}/api/jobs", json={"notebook": "tiny.ipynb"}, timeout=30)
    assert server.wait_for(response.json()["id"], timeout_s=90)["state"] == "succeeded"
    links = list((server.data_dir / "runtime").iterdir())
    assert len(links) == 1
    private = links[0].resolve()
    assert stat.S_IMODE(private.stat().st_mode) & 0o777 == 0o700  # jupyter_client adds the sticky bit
    deadline = time.monotonic() + 30
    while not any(p.suffix == ".json" for p in private.iterdir()):  # the warm kernel's connection file
        assert time.monotonic() < deadline, sorted(p.name for p in private.iterdir())
        time.sleep(0.1)
    server.kill()
    assert private.exists()  # SIGKILL cleans nothing up...
    server.start()
    assert not private.exists()  # ...the next start does
    assert not any(link.name == links[0].name for link in (server.data_dir / "runtime").iterdir())
