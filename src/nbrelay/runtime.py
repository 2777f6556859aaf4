"""The private runtime folder of a running instance: kernel connection files (they hold the kernel's signing
key), IPC sockets and temporary files, in a folder only this user can enter (mode 0700), never shared with other
instances on the host. A SIGKILL leaves it behind: the next start of the same data folder removes it.

The folder itself is a short path under the system's temporary folder (a Unix socket's path must stay under 108
bytes, which a deep data folder would break), recorded as a symlink `<data_dir>/runtime/<pid>` so the instance
that owns the data folder finds what a dead predecessor left.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_dead(data_dir: Path) -> int:
    """Remove the runtime folders of instances of this data folder that are gone; how many there were."""
    root = data_dir / "runtime"
    removed = 0
    if not root.is_dir():
        return 0
    for link in root.iterdir():
        if not link.name.isdigit() or _alive(int(link.name)):
            continue
        with contextlib.suppress(OSError):
            if link.is_symlink():
                target = link.readlink()
                if target.name.startswith("nbrelay-"):  # only ever a folder this module made
                    shutil.rmtree(target, ignore_errors=True)
            link.unlink()
            removed += 1
    if removed:
        log.info("removed %d runtime folder(s) left by stopped instances", removed)
    return removed


def make_runtime_dir(data_dir: Path) -> Path:
    """A new private runtime folder for this process, after clearing what dead instances left."""
    clean_dead(data_dir)
    root = data_dir / "runtime"
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="nbrelay-"))  # mode 0700, a short path
    link = root / str(os.getpid())
    with contextlib.suppress(FileNotFoundError):
        link.unlink()
    link.symlink_to(folder)
    return folder


def remove_runtime_dir(data_dir: Path, folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    with contextlib.suppress(OSError):
        (data_dir / "runtime" / str(os.getpid())).unlink()


def hold_lock(path: Path) -> int | None:
    """Hold the lock file `path` for the rest of this process's life (the system lets it go when the process ends,
    however it ends); its descriptor, or None when another process holds it (its pid is then in the file).

    One `nbrelay serve` per SQLite job database: a second one started on the same data folder took the first
    one's running job for what a crash left, failed it and ran jobs from the same queue (found from outside)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def lock_holder(path: Path) -> str:
    """Who holds the lock file `path`, as it says: "pid 1234", or "another process"."""
    with contextlib.suppress(OSError, ValueError):
        return f"pid {int(path.read_text().strip())}"
    return "another process"
