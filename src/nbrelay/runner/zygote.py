"""A preloaded process that forks fresh Python kernels on request: ~0.07 CPU-s per kernel instead of ~0.8.

Protocol on stdin/stdout, one JSON object per line: {"args": [...], "cwd": str, "env": {...}} → {"pid": N}.
Each kernel is forked twice so that it is re-parented to the worker (a child subreaper), which can then wait
for it and read its exit signal like any child. Once adopted, a kernel asks the OS to kill it when the worker dies
(parent-death signal): ipykernel's own check notices only a parent it saw at its start or a re-parent to pid 1,
and under another subreaper (a container's init, a CI runner) a kernel orphaned early would live on. Nothing here
runs threads before forking.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import signal
import sys
import time
from typing import Any

from nbrelay.runner import enter
from nbrelay.runner.lifeline import start_kernel

# What a kernel imports while it initialises and runs its first cell, beyond ipykernel's own modules (ipykernel 6,
# IPython 8): imported here once, each a few milliseconds of every kernel's start otherwise (~18 ms of CPU per
# kernel in all, measured). A name a later version no longer has is skipped.
_KERNEL_START_MODULES = (
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.logger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "IPython.utils.wildcard",
    "faulthandler",
    "pdb",
    "runpy",
    "sqlite3",
    "tornado.platform.asyncio",
)


def _preload() -> None:
    # The debugger is imported by every kernel at start and costs ~0.3 s: import it once, here.
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    import ipykernel.debugger
    import ipykernel.ipkernel
    import ipykernel.kernelapp  # noqa: F401

    for name in _KERNEL_START_MODULES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    # A kernel's first cell compiles the tokenizer's regular expressions, IPython's input transforms run on it:
    # ~8 ms of CPU, against ~0.5 for a later cell. Compiled here once, they sit in the caches every kernel inherits.
    with contextlib.suppress(Exception):
        from IPython.core.inputtransformer2 import TransformerManager

        TransformerManager().transform_cell("pass\n")
    # Everything alive now (the modules above, their classes and functions) is out of the collector's reach for
    # good: a kernel's collections would otherwise walk these objects and write to each one's header, copying
    # nearly every page it shares with us (copy-on-write). ~19 ms of CPU per kernel start, measured.
    gc.freeze()


KERNEL_PROCESS_NAME = b"nbrelay-kernel"
_PR_SET_NAME = 15


def _name_process(name: bytes) -> None:
    """Show forked kernels as what they are in ps/top (their command line is still the zygote's)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def _adopted(middle: int, owner: int, memory_max_bytes: int) -> None:
    """In the grandchild: once the middle process is gone (we are the owner's now), die when the owner dies, and
    keep within the memory limit.

    The parent-death signal fires at every change of parent, so it is set only after the middle one; the owner
    may have died before that, which the check after it sees."""
    while os.getppid() == middle:  # the middle process exits as soon as it has told our pid
        time.sleep(0.001)
    start_kernel(owner, memory_max_bytes)


def _become_kernel(request: dict[str, Any]) -> None:
    """In the grandchild: detach, take the job's environment and run the kernel until it exits."""
    _name_process(KERNEL_PROCESS_NAME)
    os.setsid()  # its own process group, so interrupt/kill reach the kernel and what it spawns, not us
    devnull = os.open(os.devnull, os.O_RDWR)
    log = request.get("log_path")
    err = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600) if log else devnull
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.dup2(err, 2)
    os.chdir(request.get("cwd") or "/")
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a kernel is interrupted by SIGINT: not ignored
    if request.get("enter_file"):
        enter.install(str(request["enter_file"]))
    os.environ.clear()
    os.environ.update(request.get("env") or {})
    args = [str(a) for a in request["args"]]
    sys.argv = ["ipykernel_launcher", *args]
    from ipykernel.kernelapp import IPKernelApp

    IPKernelApp.launch_instance(argv=args)


def _fork_kernel(request: dict[str, Any], owner: int) -> int:
    read_fd, write_fd = os.pipe()
    middle = os.fork()
    if middle == 0:
        code = 0
        try:
            os.close(read_fd)
            middle_pid = os.getpid()
            kernel = os.fork()
            if kernel == 0:
                os.close(write_fd)
                try:
                    _adopted(middle_pid, owner, int(request.get("memory_max_bytes") or 0))
                    _become_kernel(request)
                finally:
                    os._exit(0)
            os.write(write_fd, str(kernel).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(middle, 0)
    if not answer:
        raise RuntimeError("fork of the kernel process failed")
    return int(answer)


def main() -> None:
    owner = os.getppid()  # the worker process that started us: it adopts the kernels (a child subreaper)
    # Ctrl-C in the server's terminal reaches its whole process group: the server stops its workers, and they us
    # (found from outside: the zygote died of it mid-stop, and the runs of its kernels with it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # `python -m` put the folder we were started in (the server's) first on sys.path, where a kernel's own would
    # shadow the modules next to its notebook: the kernel adds its folder there when it enters it (enter.py).
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == os.getcwd():
        del sys.path[0]
    _preload()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    stdout.write(b'{"ready": true}\n')
    stdout.flush()
    for line in stdin:
        try:
            reply: dict[str, Any] = {"pid": _fork_kernel(json.loads(line), owner)}
        except Exception as exc:  # answer every request: the caller is waiting for this line
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        stdout.write(json.dumps(reply).encode() + b"\n")
        stdout.flush()


if __name__ == "__main__":
    main()
