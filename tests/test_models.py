import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nbrelay.errors import InvalidTransition
from nbrelay.models import TERMINAL_STATES, Event, Job, JobError, JobState, compact_json, transition, type_kind


def job(state: JobState = JobState.QUEUED) -> Job:
    return Job(id=7, owner="alice", notebook="a.ipynb", kernel_name="python3", state=state)


ALLOWED = {
    (JobState.QUEUED, JobState.RUNNING),
    (JobState.QUEUED, JobState.CANCELLED),
    (JobState.RUNNING, JobState.QUEUED),
    (JobState.RUNNING, JobState.SUCCEEDED),
    (JobState.RUNNING, JobState.FAILED),
    (JobState.RUNNING, JobState.CANCELLED),
    (JobState.RUNNING, JobState.TIMED_OUT),
}


@pytest.mark.parametrize("start", list(JobState))
@pytest.mark.parametrize("to", list(JobState))
def test_only_the_designed_transitions_are_allowed(start: JobState, to: JobState) -> None:
    if (start, to) in ALLOWED:
        assert transition(job(start), to).state is to
    else:
        with pytest.raises(InvalidTransition) as caught:
            transition(job(start), to)
        assert caught.value.status == 409
        assert f"is {start.value} and cannot become {to.value}" in caught.value.message


def test_transition_stamps_start_and_finish_times() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    running = transition(job(), JobState.RUNNING, at=at)
    assert running.started_at == at and running.finished_at is None
    done = transition(running, JobState.SUCCEEDED, at=at.replace(minute=5))
    assert done.finished_at == at.replace(minute=5)
    assert done.duration_s == 60.0


def test_requeue_starts_a_new_attempt_with_nothing_of_the_lost_one() -> None:
    running = transition(job(), JobState.RUNNING, worker="w1", progress_cell=3, progress_total=9)
    requeued = transition(running, JobState.QUEUED)
    assert requeued.attempt == 2 and requeued.worker is None and requeued.lease_expires_at is None
    assert requeued.started_at is None and (requeued.progress_cell, requeued.progress_total) == (0, 0)
    assert transition(transition(requeued, JobState.RUNNING), JobState.QUEUED).attempt == 3


def test_transition_returns_a_new_job_and_keeps_the_old() -> None:
    queued = job()
    running = transition(queued, JobState.RUNNING, progress_total=3)
    assert queued.state is JobState.QUEUED and running.progress_total == 3


def test_terminal_states_have_no_way_out() -> None:
    for state in TERMINAL_STATES:
        assert state.terminal
        for to in JobState:
            with pytest.raises(InvalidTransition):
                transition(job(state), to)


def test_invalid_transition_survives_pickling() -> None:
    import pickle

    error = InvalidTransition(1, "queued", "succeeded")
    again = pickle.loads(pickle.dumps(error))
    assert again.message == error.message


def test_event_id_and_wire_form() -> None:
    event = Event("job.progress", {"job": 3, "cell": 1}, ts=datetime(2026, 1, 1, tzinfo=UTC))
    assert event.id is None and event.job_id == 3
    positioned = event.positioned("job:3", 42, "k3f9")
    assert positioned.to_dict() == {
        "stream": "job:3",
        "offset": 42,
        "epoch": "k3f9",
        "id": "k3f9:42",
        "type": "job.progress",
        "ts": "2026-01-01T00:00:00.000Z",
        "data": {"job": 3, "cell": 1},
    }


def test_an_event_reads_back_from_its_wire_form() -> None:
    event = Event("notice", {"text": "naïve ✓", "n": [1, 2]}).positioned("broadcast", 7, "e1")
    again = Event.from_dict(json.loads(event.json()))
    assert again.to_dict() == event.to_dict() and again.json() == event.json()
    unpositioned = Event.from_dict(json.loads(Event("job.queued", {"job": 1}).json()))
    assert (unpositioned.stream, unpositioned.offset, unpositioned.epoch, unpositioned.id) == (None, None, None, None)


@pytest.mark.parametrize(
    ("state", "cell", "total", "phase"),
    [
        (JobState.QUEUED, 0, 0, None),
        (JobState.RUNNING, 0, 0, "starting_kernel"),  # no cell counted before the kernel is up
        (JobState.RUNNING, 0, 40, "running_cells"),
        (JobState.RUNNING, 39, 40, "running_cells"),
        (JobState.RUNNING, 40, 40, "writing_report"),
        (JobState.SUCCEEDED, 40, 40, None),
    ],
)
def test_phase_of_a_job(state: JobState, cell: int, total: int, phase: str | None) -> None:
    assert Job(7, "alice", "a.ipynb", "python3", state=state, progress_cell=cell, progress_total=total).phase == phase


def test_an_error_names_its_cell_1_based_and_old_0_based_indexes_are_not_taken_for_it() -> None:
    error = JobError("cell 3 raised ValueError", cell=3, ename="ValueError")
    assert JobError.from_dict(error.to_dict()) == error and error.to_dict()["cell"] == 3
    assert "cell_index" not in error.to_dict()
    # Stored before the one numbering: its 0-based index counted markdown cells too, so it has no cell number.
    old = JobError.from_dict({"reason": "cell 1 raised ValueError", "cell_index": 1, "ename": "ValueError"})
    assert old is not None and old.cell is None and old.reason == "cell 1 raised ValueError"


def test_an_event_encodes_its_data_once_for_every_stream_and_frame() -> None:
    """json() is the compact JSON of to_dict(), byte for byte; the data's text is made once and shared by the
    positioned copies (one per stream), however their frames are built."""
    event = Event("job.progress", {"job": 7, "text": 'naïve ✓ "quoted"\n', "cell": 3, "elapsed_s": 1.5})
    data = event.data_json()
    owner, job = event.positioned("user:a", 4, "ab12"), event.positioned("job:7", 9, "cd34")
    for copy in (owner, job):
        assert copy.data_json() is data
        assert copy.json() == compact_json(copy.to_dict())
        assert json.loads(copy.ws_text()) == {"op": "event", **copy.to_dict()}
    empty = Event("notice", {}).positioned("broadcast", 1, "e")
    assert empty.json() == compact_json(empty.to_dict())


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)  # any text JSON can carry


@settings(max_examples=300, deadline=None)
@given(
    type_=_TEXT,
    stream=st.none() | _TEXT,
    offset=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    epoch=st.none() | _TEXT,
    ts=st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5)), timezone(timedelta(hours=13))])),
    data=st.dictionaries(_TEXT, st.none() | st.booleans() | st.integers() | _TEXT, max_size=3),
)
def test_json_is_compact_json_of_to_dict_for_any_event(
    type_: str, stream: str | None, offset: int | None, epoch: str | None, ts: datetime, data: dict[str, Any]
) -> None:
    """json() writes the wire form itself (it is on every event's path): byte for byte what compact_json makes of
    to_dict(), for any strings (quotes, controls, non-ASCII), time zone and position, positioned copies too."""
    event = Event(type_, data, ts=ts, stream=stream, offset=offset, epoch=epoch)
    assert event.json() == compact_json(event.to_dict())
    assert event.to_dict()["ts"].endswith("Z") and datetime.fromisoformat(event.to_dict()["ts"]) == ts.replace(
        microsecond=ts.microsecond // 1000 * 1000
    )
    copy = event.positioned("user:a", 3, "e1")
    assert copy.json() == compact_json(copy.to_dict())


@pytest.mark.parametrize(
    ("declared", "kind", "nullable"),
    [
        ("int", "int", False),
        ("float", "float", False),
        ("complex", "float", False),
        ("bool", "bool", False),
        ("str", "str", False),
        ("list[int]", "list", False),
        ("typing.List[int]", "list", False),
        ("tuple", "list", False),
        ("dict[str, int | None]", "dict", False),  # the | inside brackets is not the type's own
        ("Optional[int]", "int", True),
        ("typing.Optional[typing.Dict[str, int]]", "dict", True),
        ("int | None", "int", True),
        ("None | str", "str", True),
        ("Union[int, None]", "int", True),
        ("Union[int, str]", "any", False),
        ("str | int", "any", False),
        ("None", "any", True),  # untyped: any value
        ("MyClass", "any", False),
    ],
)
def test_type_kind_reads_the_kind_of_value_a_declared_type_takes(declared: str, kind: str, nullable: bool) -> None:
    assert type_kind(declared) == (kind, nullable)
