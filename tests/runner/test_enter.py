"""A forked kernel's way into its job's folder: a request file and a signal (runner/enter.py), tried on a plain
child process that installs the handler as a kernel does."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from nbrelay.runner import enter

CHILD = """
import os, sys, time
from nbrelay.runner import enter
enter.install(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:  # each line asks: where are you now?
    print(os.getcwd(), flush=True)
"""


def _child(request_file: Path, start: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(request_file)],
        cwd=start,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    return child


def _where(child: subprocess.Popen[str]) -> str:
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write("?\n")
    child.stdin.flush()
    return child.stdout.readline().strip()


def test_the_kernel_enters_the_folder_it_is_asked_to_and_the_request_is_consumed(tmp_path: Path) -> None:
    request, folder = tmp_path / "k-enter", tmp_path / "job folder"
    folder.mkdir()
    child = _child(request, tmp_path)
    try:
        enter.ask(child.pid, str(request), folder)
        assert _where(child) == str(folder)
        assert not request.exists() and not Path(f"{request}.partial").exists()
    finally:
        child.kill()
        child.wait()


def test_a_stray_signal_changes_nothing(tmp_path: Path) -> None:
    child = _child(tmp_path / "k-enter", tmp_path)
    try:
        child.send_signal(enter.ENTER_SIGNAL)
        assert _where(child) == str(tmp_path)
    finally:
        child.kill()
        child.wait()


def test_a_folder_that_is_gone_ends_the_kernel_with_its_own_exit_code(tmp_path: Path) -> None:
    child = _child(tmp_path / "k-enter", tmp_path)
    enter.ask(child.pid, str(tmp_path / "k-enter"), tmp_path / "gone")
    deadline = time.monotonic() + 10
    while child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.returncode == enter.ENTER_FAILED_EXIT
