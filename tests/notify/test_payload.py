"""The notification body: what its `error` says of how a job ended."""

from __future__ import annotations

import pytest

from nbrelay.models import Job, JobError, JobState, transition
from nbrelay.notify.payload import job_payload


def ended(state: JobState, error: JobError) -> Job:
    running = transition(Job(id=7, owner="alice", notebook="nb/a.ipynb", kernel_name="python3"), JobState.RUNNING)
    return transition(running, state, error=error)


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        (JobState.TIMED_OUT, "job exceeded its timeout of 2 s"),
        (JobState.TIMED_OUT, "cell 3 exceeded the cell timeout of 5 s"),
        (JobState.CANCELLED, "cancelled by request"),
        (JobState.FAILED, "interrupted: server stopped"),
    ],
)
def test_an_interrupted_job_says_why_it_ended_not_keyboard_interrupt(state: JobState, reason: str) -> None:
    # The interrupt that stops the running cell is recorded as the cell's error; it tells nothing.
    error = JobError(reason, cell=3, ename="KeyboardInterrupt", evalue="")
    data = job_payload(ended(state, error))["data"]
    assert data["error"] == reason and data["failing_cell"] == 3


def test_a_cell_that_raised_reads_as_its_exception() -> None:
    error = JobError("cell 2 raised KeyError", cell=2, ename="KeyError", evalue="'region'")
    assert job_payload(ended(JobState.FAILED, error))["data"]["error"] == "KeyError: 'region'"
    no_exception = JobError("kernel died (SIGKILL)", cell=2)
    assert job_payload(ended(JobState.FAILED, no_exception))["data"]["error"] == "kernel died (SIGKILL)"
    long = JobError("x", ename="ValueError", evalue="v" * 5000)
    text = job_payload(ended(JobState.FAILED, long))["data"]["error"]
    assert len(text) == 1000 and text.endswith("…")
