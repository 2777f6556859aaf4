"""The domain types — Job, JobState and its one transition function, Event — with no I/O.

Every state change of a job goes through `transition`, so the rules live in one place and are tested alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from json.encoder import encode_basestring
from typing import Any

from nbrelay.errors import InvalidTransition


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT})
UNFINISHED_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})

_ALLOWED: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    # running -> queued: the worker running it was lost and the job goes back to the queue as a new attempt.
    JobState.RUNNING: frozenset(
        {JobState.QUEUED, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.TIMED_OUT}
    ),
}

# The event type announced when a job enters each state.
STATE_EVENT: dict[JobState, str] = {
    JobState.QUEUED: "job.queued",
    JobState.RUNNING: "job.started",
    JobState.SUCCEEDED: "job.succeeded",
    JobState.FAILED: "job.failed",
    JobState.CANCELLED: "job.cancelled",
    JobState.TIMED_OUT: "job.timed_out",
}
EVENT_STATE: dict[str, JobState] = {kind: state for state, kind in STATE_EVENT.items()}
TERMINAL_EVENTS = frozenset(STATE_EVENT[s] for s in TERMINAL_STATES)


# The JSON text nbrelay sends and stores: no spaces, non-ASCII characters as they are (UTF-8 on the wire). One
# encoder, so the same value is the same bytes wherever it goes (events, webhook bodies that are signed).
compact_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(ts: datetime | None) -> str | None:
    """ "2026-12-05T09:38:40.123Z": UTC, to the millisecond (a naive time is taken as local, as astimezone does)."""
    if ts is None:
        return None
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    return ts.isoformat(timespec="milliseconds")[:-6] + "Z"  # without its "+00:00"


def _json_text(value: str | None) -> str:
    """A string (or None) as compact_json writes it."""
    return "null" if value is None else encode_basestring(value)


@dataclass(frozen=True, slots=True)
class JobError:
    """Why a job did not succeed: the failing cell when there is one, else a reason.

    `cell` counts as people do and as the report shows it: the n-th code cell that runs is cell n, In [n] in the
    report (runner/notebook.runs). Errors recorded before this numbering (a 0-based `cell_index`) read back
    without a cell: that index counted every cell, so it cannot be turned into this number.
    """

    reason: str
    cell: int | None = None
    ename: str | None = None
    evalue: str | None = None
    traceback: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> JobError | None:
        if not data:
            return None
        return cls(
            reason=str(data.get("reason", "")),
            cell=data.get("cell"),
            ename=data.get("ename"),
            evalue=data.get("evalue"),
            traceback=list(data.get("traceback") or []),
        )


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    owner: str
    notebook: str
    kernel_name: str
    parameters: dict[str, Any] = field(default_factory=dict)
    state: JobState = JobState.QUEUED
    timeout_s: float | None = None
    cell_timeout_s: float | None = None
    created_at: datetime = field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    progress_cell: int = 0
    progress_total: int = 0
    error: JobError | None = None
    report_path: str | None = None
    output_path: str | None = None
    cancel_requested: bool = False
    steps: list[dict[str, Any]] = field(default_factory=list)  # post-run file steps (nbrelay.steps), validated
    step_results: list[dict[str, Any]] | None = None  # one result per step once they ran; None: they did not
    attempt: int = 1  # 2, 3, … when the job was re-queued after its worker was lost
    # Who runs it: the worker's id, and until when its lease holds (renewed by the worker's heartbeat; a lease
    # that runs out means the worker is lost). No lease (None) on the embedded default, where the server is it.
    worker: str | None = None
    lease_expires_at: datetime | None = None
    schedule_id: int | None = None  # the schedule whose tick (or run now) started the job

    @property
    def phase(self) -> str | None:
        """What a running job is doing: "starting_kernel" until its cells are counted (job.started), then
        "running_cells", then "writing_report" after its last cell; None unless running. A notebook without code
        cells counts none, so it shows "starting_kernel" until it ends (a moment)."""
        if self.state is not JobState.RUNNING:
            return None
        if self.progress_total <= 0:
            return "starting_kernel"
        return "running_cells" if self.progress_cell < self.progress_total else "writing_report"

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def report_url(self) -> str | None:
        """Where the service serves the job's HTML report (a path from its root); None until there is one."""
        return f"/api/jobs/{self.id}/report" if self.report_path else None

    @property
    def notebook_url(self) -> str | None:
        """Where the service serves the executed notebook; None until there is one."""
        return f"/api/jobs/{self.id}/notebook" if self.output_path else None


def transition(job: Job, to: JobState, *, at: datetime | None = None, **changes: Any) -> Job:
    """Return `job` moved to state `to`, or raise InvalidTransition; the one place states change."""
    if to not in _ALLOWED.get(job.state, frozenset()):
        raise InvalidTransition(job.id, job.state.value, to.value)
    at = at or utcnow()
    if to is JobState.RUNNING:
        changes.setdefault("started_at", at)
    elif to is JobState.QUEUED:  # a new attempt: nothing of the lost one carries over
        changes = {
            "started_at": None,
            "progress_cell": 0,
            "progress_total": 0,
            "worker": None,
            "lease_expires_at": None,
            "attempt": job.attempt + 1,
            **changes,
        }
    elif to.terminal:
        changes.setdefault("finished_at", at)
    return dataclasses.replace(job, state=to, **changes)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked WebSocket frame (RFC 6455 5.2) as a server sends it."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 1 << 16:
        return bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big") + payload


def text_frame(payload: bytes) -> bytes:
    """A final, unmasked WebSocket text frame carrying `payload` (UTF-8)."""
    return server_frame(0x1, payload)


@dataclass(frozen=True, slots=True)
class Event:
    """The one event type: made by the runner, recorded by the store, positioned by the hub, sent by transports.

    `stream`, `offset` and `epoch` are set by the hub when it publishes the event on a stream.
    """

    type: str
    data: dict[str, Any]
    ts: datetime = field(default_factory=utcnow)
    stream: str | None = None
    offset: int | None = None
    epoch: str | None = None
    # Encoded once, however many clients the event goes to (see json() and ws_text()); the data once for every
    # stream the event is published on (see data_json()).
    _data_json: str | None = field(default=None, init=False, repr=False, compare=False)
    _ts_text: str | None = field(default=None, init=False, repr=False, compare=False)  # isoformat(ts), shared too
    _json: str | None = field(default=None, init=False, repr=False, compare=False)
    _ws_text: str | None = field(default=None, init=False, repr=False, compare=False)
    _ws_frame: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def data_json(self) -> str:
        """The event's data as compact JSON text, built on first use and kept (its positioned copies share it)."""
        text = self._data_json
        if text is None:
            text = compact_json(self.data)
            object.__setattr__(self, "_data_json", text)
        return text

    def json(self) -> str:
        """The event as compact JSON text (the SSE `data:`), built on first use and kept."""
        text = self._json
        if text is None:
            # to_dict() through compact_json, written out: this runs once per event on the push path
            ts = self._ts_text
            if ts is None:
                ts = isoformat(self.ts)
                object.__setattr__(self, "_ts_text", ts)
            offset = "null" if self.offset is None else str(self.offset)
            text = (
                f'{{"stream":{_json_text(self.stream)},"offset":{offset},"epoch":{_json_text(self.epoch)},'
                f'"id":{_json_text(self.id)},"type":{_json_text(self.type)},"ts":{_json_text(ts)},'
                f'"data":{self.data_json()}}}'
            )
            object.__setattr__(self, "_json", text)
        return text

    def ws_text(self) -> str:
        """The protocol v1 frame {"op": "event", …event}, built on first use and kept."""
        text = self._ws_text
        if text is None:
            text = '{"op":"event",' + self.json()[1:]
            object.__setattr__(self, "_ws_text", text)
        return text

    def ws_frame(self) -> bytes:
        """ws_text() as a whole WebSocket text frame as a server sends it (unmasked, no extension), built once:
        a broadcast writes these same bytes to every socket."""
        frame = self._ws_frame
        if frame is None:
            frame = text_frame(self.ws_text().encode())
            object.__setattr__(self, "_ws_frame", frame)
        return frame

    @property
    def id(self) -> str | None:
        if self.epoch is None or self.offset is None:
            return None
        return f"{self.epoch}:{self.offset}"

    @property
    def job_id(self) -> int | None:
        job = self.data.get("job")
        return int(job) if job is not None else None

    def positioned(self, stream: str, offset: int, epoch: str) -> Event:
        """This event as published on `stream`: the same type, data and time, at (epoch, offset)."""
        copy = Event(self.type, self.data, ts=self.ts, stream=stream, offset=offset, epoch=epoch)
        if self._data_json is not None:
            object.__setattr__(copy, "_data_json", self._data_json)
        if self._ts_text is not None:
            object.__setattr__(copy, "_ts_text", self._ts_text)
        return copy

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Event:
        """The event that to_dict() (or json(), once decoded) describes."""
        ts = value.get("ts")
        offset = value.get("offset")
        return cls(
            str(value["type"]),
            dict(value.get("data") or {}),
            ts=datetime.fromisoformat(ts) if ts else utcnow(),
            stream=value.get("stream"),
            offset=int(offset) if offset is not None else None,
            epoch=value.get("epoch"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.stream,
            "offset": self.offset,
            "epoch": self.epoch,
            "id": self.id,
            "type": self.type,
            "ts": isoformat(self.ts),
            "data": self.data,
        }


# A declared type's name → the kind of JSON value it takes.
_KINDS = {
    "int": "int",
    "float": "float",
    "complex": "float",
    "bool": "bool",
    "str": "str",
    "list": "list",
    "tuple": "list",
    "set": "list",
    "dict": "dict",
}


def _split_top(text: str, separator: str) -> list[str]:
    """`text` cut at each `separator` that stands outside brackets (`dict[str, int] | None` → two parts)."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += (char == "[") - (char == "]")
        if char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [part.strip() for part in parts]


def type_kind(type_name: str) -> tuple[str, bool]:
    """The kind of JSON value a declared type takes — "int", "float", "bool", "str", "list", "dict", or "any"
    (untyped, a union of several kinds, a class of its own) — and whether it takes null too. `Optional[int]`,
    `int | None` and `Union[int, None]`, with or without `typing.`, are all ("int", True)."""
    name = type_name.strip().replace("typing.", "")
    head = name.split("[", 1)[0].strip().lower()
    if head in ("optional", "union") and name.endswith("]"):
        parts = _split_top(name[name.index("[") + 1 : -1], ",") + (["None"] if head == "optional" else [])
    else:
        parts = _split_top(name, "|")
    kinds = {
        _KINDS.get(part.split("[", 1)[0].strip().lower(), "any") for part in parts if part not in ("None", "NoneType")
    }
    nullable = any(part in ("None", "NoneType") for part in parts)
    return (kinds.pop() if len(kinds) == 1 else "any"), nullable


@dataclass(frozen=True, slots=True)
class Parameter:
    """A parameter declared in a notebook's `parameters` cell, as papermill infers it."""

    name: str
    type: str  # papermill's inferred type name: "int", "float", "str", "bool", "list", "dict", "None", …
    default: str  # the default as written in the cell (source text)
    help: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Its fields, and the kind of value its type takes (`type_kind`): what a form or the CLI reads a value as."""
        kind, nullable = type_kind(self.type)
        return {**dataclasses.asdict(self), "kind": kind, "nullable": nullable}
