"""Caps on what a job's cells may print: a flood of output must not fill the worker's memory or the report.

Per cell, the first half of `cell_max_chars` goes into the notebook as it comes; past that, stream text is only
kept as a rolling tail of the other half, and at the end of the cell the tail goes in behind a note saying how
much was cut. Once the job has kept `job_max_chars` in all, every later cell keeps only its note and tail. Other
outputs (images, HTML) that no longer fit are dropped and counted in the note. Pure bookkeeping, no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


def _size(n: int) -> str:
    if n < 10_000:
        return f"{n:,} characters"
    if n < 1_000_000:
        return f"{n / 1000:.0f} K characters"
    return f"{n / 1_000_000:.1f} M characters"


@dataclass
class OutputCap:
    cell_max_chars: int
    job_max_chars: int
    job_kept: int = 0
    cell_kept: int = 0
    cut_chars: int = 0
    cut_outputs: int = 0
    _tail: deque[str] = field(default_factory=deque)
    _tail_chars: int = 0
    _tail_name: str = "stdout"

    def new_cell(self) -> None:
        self.cell_kept = self.cut_chars = self.cut_outputs = self._tail_chars = 0
        self._tail.clear()

    @property
    def _room(self) -> int:
        return max(0, min(self.cell_max_chars // 2 - self.cell_kept, self.job_max_chars - self.job_kept))

    def admit_stream(self, name: str, text: str) -> str:
        """The part of `text` that goes into the notebook now; the rest is cut or kept for the tail."""
        room = self._room
        if len(text) <= room and not self.cut_chars:
            self._keep(len(text))
            return text
        head, rest = text[:room] if not self.cut_chars else "", text[room:] if not self.cut_chars else text
        self._keep(len(head))
        self._tail_name = name
        self._tail.append(rest)
        self._tail_chars += len(rest)
        self.cut_chars += len(rest)
        budget = self.cell_max_chars - self.cell_max_chars // 2
        while self._tail_chars > budget and self._tail:  # keep only the newest `budget` characters
            extra = self._tail_chars - budget
            first = self._tail[0]
            if len(first) <= extra:
                self._tail.popleft()
                self._tail_chars -= len(first)
            else:
                self._tail[0] = first[extra:]
                self._tail_chars -= extra
        return head

    def admit_output(self, size: int) -> bool:
        """Whether a rich output of `size` characters (as JSON) still fits; if not it is dropped and counted."""
        if size <= self._room:
            self._keep(size)
            return True
        self.cut_outputs += 1
        return False

    def _keep(self, n: int) -> None:
        self.cell_kept += n
        self.job_kept += n

    def closing(self) -> tuple[str, str] | None:
        """(stream name, text) to append to the cell when something was cut: the note, then the kept tail."""
        if not self.cut_chars and not self.cut_outputs:
            return None
        tail = "".join(self._tail)
        parts = []
        if self.cut_chars:
            dropped = self.cut_chars - len(tail)
            what = f"{_size(dropped)} cut, " if dropped else ""
            parts.append(f"{_size(self.cut_chars)} of output over the limits: {what}the last {_size(len(tail))} follow")
        if self.cut_outputs:
            parts.append(f"{self.cut_outputs} output(s) dropped")
        limits = f"(limits: {_size(self.cell_max_chars)} per cell, {_size(self.job_max_chars)} per job)"
        note = f"\n[nbrelay: {', '.join(parts)} {limits}]\n"
        return self._tail_name, note + tail
