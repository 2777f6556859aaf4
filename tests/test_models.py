from datetime import UTC, datetime

import pytest

from nbrelay.errors import InvalidTransition
from nbrelay.models import TERMINAL_STATES, Event, Job, JobState, transition


def job(state: JobState = JobState.QUEUED) -> Job:
    return Job(id=7, owner="alice", notebook="a.ipynb", kernel_name="python3", state=state)


ALLOWED = {
    (JobState.QUEUED, JobState.RUNNING),
    (JobState.QUEUED, JobState.CANCELLED),
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
    positioned = Event(event.type, event.data, ts=event.ts, stream="job:3", offset=42, epoch="k3f9")
    assert positioned.to_dict() == {
        "stream": "job:3",
        "offset": 42,
        "epoch": "k3f9",
        "id": "k3f9:42",
        "type": "job.progress",
        "ts": "2026-01-01T00:00:00.000Z",
        "data": {"job": 3, "cell": 1},
    }
