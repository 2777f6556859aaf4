"""The sql:// hub's journal on SQLite: who may hand out a stream's next offsets, and where an event is kept from the
moment it is delivered until its group is written to the database.

Beside the database file `<db>` lie three files of the hub's own:

- `<db>-hub.lock`, locked (flock) by the one process that hands out offsets at this moment. It holds the token of
  the last process that did: a process that finds its own token there knows that nobody else wrote in between, so
  the positions it remembers are still exact.
- `<db>-hub.journal0` and `<db>-hub.journal1`: one line per publish, appended (one `write`) before its events are
  delivered, cleared once the database has them. A record written is in the operating system's cache: a process
  that dies (SIGKILL, a crash) loses none, and the next process that takes the lock finds them and writes them to
  the database before it hands out an offset. Two files, so that what is published while one group is being
  written goes to the other, which is not cleared under it.

A line is `<header JSON>\\t<data JSON>\\n`, the header `[ts, type, [[stream, offset, epoch], ...]]`. Neither part
holds a raw tab or newline (JSON escapes them). A line cut short by a crash has no newline and is not a record.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Placement = tuple[str, int, str]  # (stream, offset, epoch)

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
_TOKEN_BYTES = 32


@dataclass(frozen=True, slots=True)
class Taken:
    """What a process learns as it takes the lock."""

    others_wrote: bool  # another process held the lock since this one last did: what it remembers may be old
    leftovers: bool  # records are in the journal: the process that wrote them died before the database had them


@dataclass(frozen=True, slots=True)
class Record:
    ts: str
    type: str
    placements: list[Placement]
    data_json: str


_QUOTED: dict[str, str] = {}  # JSON strings of the types, streams and epochs seen (they repeat), bounded below


def _quoted(text: str) -> str:
    quoted = _QUOTED.get(text)
    if quoted is None:
        if len(_QUOTED) >= 10_000:
            _QUOTED.clear()
        quoted = _QUOTED[text] = json.dumps(text)
    return quoted


def encode(ts: str, type_: str, placements: list[Placement], data_json: str) -> bytes:
    """One record's line: the header as compact JSON would write it (built here: the hot path of every publish)."""
    where = ",".join(f"[{_quoted(stream)},{offset:d},{_quoted(epoch)}]" for stream, offset, epoch in placements)
    return f'["{ts}",{_quoted(type_)},[{where}]]\t{data_json}\n'.encode()  # ts: digits, "-", ":", "." and " "


def decode(line: bytes) -> Record:
    header, _, data = line.partition(b"\t")
    ts, type_, placements = json.loads(header)
    return Record(str(ts), str(type_), [(str(s), int(o), str(e)) for s, o, e in placements], data.decode())


class Journal:
    """The lock and the two journal files of the hub on the SQLite database at `database`. Used from one thread at a
    time (the event loop's; the writer thread only while the loop waits for it)."""

    def __init__(self, database: Path):
        self.lock_path = Path(f"{database}-hub.lock")
        self.segment_paths = (Path(f"{database}-hub.journal0"), Path(f"{database}-hub.journal1"))
        self.token = secrets.token_hex(_TOKEN_BYTES // 2).encode()
        self.held = False
        self.active = 0  # the file new records go to
        self._lock_fd: int | None = None
        self._fds: list[int] = []
        self.sizes = [0, 0]

    def open(self) -> None:
        self._lock_fd = os.open(self.lock_path, _OPEN_FLAGS, 0o600)
        self._fds = [os.open(path, _OPEN_FLAGS | os.O_APPEND, 0o600) for path in self.segment_paths]
        self.sizes = [os.fstat(fd).st_size for fd in self._fds]

    def close(self) -> None:
        if self.held:
            self.unlock()
        for fd in [*self._fds, *([self._lock_fd] if self._lock_fd is not None else [])]:
            os.close(fd)
        self._fds, self._lock_fd = [], None

    # the lock ---------------------------------------------------------------------------------------------------
    def try_lock(self) -> Taken | None:
        """Take the lock if nobody holds it; None if another process (or another hub of this one) does."""
        assert self._lock_fd is not None, "the journal is not open"
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        self.held = True
        last = os.pread(self._lock_fd, _TOKEN_BYTES, 0)
        if last == self.token:
            return Taken(others_wrote=False, leftovers=False)
        os.pwrite(self._lock_fd, self.token, 0)
        # Only another process's records can be left: this one clears its own before it lets go.
        self.sizes = [os.fstat(fd).st_size for fd in self._fds]
        return Taken(others_wrote=True, leftovers=any(self.sizes))

    def lock_waiting(self, wait_s: float, waited: Callable[[float], None]) -> Taken:
        """Take the lock, waiting up to `wait_s` while another process holds it (`waited` is told each second);
        TimeoutError after that. Blocks: run on a thread."""
        began = time.monotonic()
        warned = began
        while (taken := self.try_lock()) is None:
            now = time.monotonic()
            if now - began >= wait_s:
                raise TimeoutError(f"another process has held {self.lock_path} for {wait_s:g} s")
            if now - warned >= 1.0:
                warned = now
                waited(now - began)
            time.sleep(0.002)
        return taken

    def unlock(self) -> None:
        assert self._lock_fd is not None
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self.held = False

    # the records ------------------------------------------------------------------------------------------------
    def append(self, record: bytes) -> int:
        """Write one record to the active file; the file it went to. OSError (the disk is full, ...) leaves the
        file as it was."""
        segment = self.active
        fd = self._fds[segment]
        try:
            written = os.write(fd, record)
            if written != len(record):
                raise OSError(f"the hub journal took {written} of {len(record)} bytes")
        except OSError:
            os.ftruncate(fd, self.sizes[segment])
            raise
        self.sizes[segment] += written
        return segment

    def switch(self, unwritten: list[int]) -> None:
        """Send new records to the other file if none of its records waits for the database (`unwritten`: how many
        records of each file do): the group being written stays alone in its file, which is cleared after."""
        other = 1 - self.active
        if unwritten[other] == 0:
            self.clear(other)
            self.active = other

    def clear(self, segment: int) -> None:
        if self.sizes[segment]:
            os.ftruncate(self._fds[segment], 0)
            self.sizes[segment] = 0

    def leftovers(self) -> list[Record]:
        """Every whole record in the two files (in no particular order: writing them back does not need one)."""
        records: list[Record] = []
        for fd in self._fds:
            data = _read_all(fd)
            complete = data[: data.rfind(b"\n") + 1]
            records += [decode(line) for line in complete.splitlines() if line]
        return records


def _read_all(fd: int) -> bytes:
    chunks = []
    offset = 0
    while chunk := os.pread(fd, 1 << 20, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)
