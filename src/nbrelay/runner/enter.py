"""How a pooled kernel enters its job's folder: it starts in the workspace, and a notebook runs in its own folder, as
it would by hand.

A kernel forked by the zygote is told by a signal: the worker writes the folder to the kernel's own request file
(in the worker's private runtime folder) and sends ENTER_SIGNAL; the kernel's handler, installed before ipykernel
starts, changes folder at once. The worker sends the job's first cell after the signal, and Python runs a signal's
handler on the main thread before any other bytecode there once the signal has arrived, so the chdir precedes the
first cell. An execute request would do the same for ~5 ms of the kernel's time, which the first cell waited for.

A folder that cannot be entered (gone since the submit) makes the kernel exit with ENTER_FAILED_EXIT rather than
run the cells elsewhere; the job then fails naming the folder.

Kept to the standard library: the zygote imports it before it preloads anything.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType

ENTER_FAILED_EXIT = 213  # the exit code of a kernel that could not enter its notebook's folder
ENTER_SIGNAL = signal.SIGUSR2


def install(request_file: str) -> None:
    """In the kernel, before it starts: on ENTER_SIGNAL, enter the folder written in `request_file`."""

    def enter(signum: int, frame: FrameType | None) -> None:
        try:
            with open(request_file, encoding="utf-8") as request:
                folder = request.read()
            os.unlink(request_file)
        except OSError:
            return  # nothing asked (a stray signal)
        try:
            os.chdir(folder)
        except OSError:
            os._exit(ENTER_FAILED_EXIT)
        # As in a kernel started in that folder by hand: its modules come first on the path, and the signal is the
        # notebook's again (a library that uses SIGUSR2 finds it as Python left it).
        sys.path.insert(0, folder)
        signal.signal(ENTER_SIGNAL, signal.SIG_DFL)

    signal.signal(ENTER_SIGNAL, enter)


def ask(pid: int, request_file: str, folder: Path) -> None:
    """In the worker: have kernel `pid` (which installed a handler on `request_file`) enter `folder`."""
    partial = f"{request_file}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as request:
        request.write(str(folder))
    os.replace(partial, request_file)  # the kernel reads a whole path or none
    os.kill(pid, ENTER_SIGNAL)
