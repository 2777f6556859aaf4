"""JobService (jobs.py) on its own, against a real SQLite store in the test's folder.

The service is built as the server builds it (open_job_service: recorder and local executor) but never started,
so no worker process or kernel runs: submitted jobs stay queued, which is the state these rules are about.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from nbrelay.config import Settings
from nbrelay.errors import NotFound, Unprocessable
from nbrelay.jobs import JobService, SubmitRequest, User, open_job_service
from nbrelay.models import Event, JobError, JobState, transition
from nbrelay.store import open_store
from nbrelay.store.base import JobStore

ADMIN = User("local", admin=True)
ADA, BOB = User("ada"), User("bob")

MakeService = Callable[..., Awaitable[JobService]]


@pytest.fixture
async def make_service(tmp_path: Path, workspace: Path) -> AsyncIterator[MakeService]:
    """make_service(**settings): a job service on a fresh SQLite database; its store is closed after the test."""
    stores: list[JobStore] = []

    async def make(**overrides: Any) -> JobService:
        data_dir = tmp_path / f"data{len(stores)}"
        data_dir.mkdir()
        settings = Settings(
            workspace=workspace,
            data_dir=data_dir,
            executor="local",
            broker_url="memory://",
            workers=1,
            kernel_pool_size=0,
            **overrides,
        )
        store = open_store(settings.database_url)
        await store.start()
        stores.append(store)
        return open_job_service(settings, store)

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def service(make_service: MakeService) -> JobService:
    return await make_service()


@pytest.fixture
def heard(service: JobService) -> list[Event]:
    """The events the service tells its listeners, from now on."""
    events: list[Event] = []

    async def listen(event: Event) -> None:
        events.append(event)

    service.listeners.append(listen)
    return events


# submit ------------------------------------------------------------------------------------------------------------
async def test_submit_stores_a_queued_job_and_tells_the_listeners(service: JobService, heard: list[Event]) -> None:
    job = await service.submit(ADMIN, SubmitRequest("params.ipynb", {"n": 3, "label": "x"}))

    assert (job.owner, job.notebook, job.state, job.parameters) == (
        "local",
        "params.ipynb",
        JobState.QUEUED,
        {"n": 3, "label": "x"},
    )
    assert job.kernel_name == "python3"
    assert await service.store.get_job(job.id) == job
    assert [(e.type, e.data["job"], e.data["state"]) for e in heard] == [("job.queued", job.id, "queued")]


@pytest.mark.parametrize(
    ("parameters", "named", "problem"),
    [
        ({"n": "three"}, "n", "expected"),
        ({"nope": 1}, "nope", "unknown parameter"),
        ({"x": float("nan")}, "x", "not a finite number"),
    ],
)
async def test_submit_with_a_bad_parameter_is_a_422_naming_it(
    service: JobService, parameters: dict[str, Any], named: str, problem: str
) -> None:
    with pytest.raises(Unprocessable) as refused:
        await service.submit(ADMIN, SubmitRequest("params.ipynb", parameters))

    error = refused.value
    assert (error.status, error.code) == (422, "invalid_parameters")
    assert error.message.startswith(f"parameter '{named}': ")
    assert [p["parameter"] for p in error.details["problems"]] == [named]
    assert problem in error.details["problems"][0]["problem"]
    assert await service.store.count_jobs() == 0  # nothing stored, nothing queued


async def test_submit_of_a_missing_notebook_is_not_found(service: JobService) -> None:
    with pytest.raises(NotFound) as refused:
        await service.submit(ADMIN, SubmitRequest("missing.ipynb"))
    assert refused.value.code == "notebook_not_found"
    assert "missing.ipynb" in refused.value.message


async def test_a_user_submits_only_notebooks_in_their_own_areas(make_service: MakeService, workspace: Path) -> None:
    service = await make_service(auth_mode="token")
    for folder in ("users/ada", "users/bob", "shared"):
        (workspace / folder).mkdir(parents=True)
        shutil.copy(workspace / "tiny.ipynb", workspace / folder / "tiny.ipynb")

    for outside in ("tiny.ipynb", "users/ada/tiny.ipynb"):
        with pytest.raises(NotFound) as refused:
            await service.submit(BOB, SubmitRequest(outside))
        # Someone else's notebook answers like a missing one: the same code and message.
        assert (refused.value.code, refused.value.message) == ("notebook_not_found", f"no notebook at {outside}")
    assert await service.store.count_jobs() == 0

    own = await service.submit(BOB, SubmitRequest("users/bob/tiny.ipynb"))
    shared = await service.submit(BOB, SubmitRequest("shared/tiny.ipynb"))
    anything = await service.submit(User("root", admin=True), SubmitRequest("users/ada/tiny.ipynb"))
    assert [(j.owner, j.notebook) for j in (own, shared, anything)] == [
        ("bob", "users/bob/tiny.ipynb"),
        ("bob", "shared/tiny.ipynb"),
        ("root", "users/ada/tiny.ipynb"),
    ]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout_s", 0.0, "timeout_s must be between 0 and 60 seconds, got 0"),
        ("timeout_s", -5.0, "timeout_s must be between 0 and 60 seconds, got -5"),
        ("timeout_s", 60.5, "timeout_s must be between 0 and 60 seconds, got 60.5"),
        ("cell_timeout_s", 0.0, "cell_timeout_s must be between 0 and 60 seconds, got 0"),
        ("cell_timeout_s", 61.0, "cell_timeout_s must be between 0 and 60 seconds, got 61"),
    ],
)
async def test_a_timeout_out_of_range_is_a_422(
    make_service: MakeService, field: str, value: float, message: str
) -> None:
    service = await make_service(max_timeout_s=60)
    with pytest.raises(Unprocessable) as refused:
        await service.submit(ADMIN, SubmitRequest("tiny.ipynb", **{field: value}))
    assert (refused.value.code, refused.value.message) == ("invalid_timeout", message)
    assert await service.store.count_jobs() == 0


async def test_timeouts_at_the_limit_are_kept_and_missing_ones_take_the_defaults(make_service: MakeService) -> None:
    service = await make_service(max_timeout_s=60, default_timeout_s=30, default_cell_timeout_s=5)
    given = await service.submit(ADMIN, SubmitRequest("tiny.ipynb", timeout_s=60, cell_timeout_s=0.5))
    defaults = await service.submit(ADMIN, SubmitRequest("tiny.ipynb"))
    assert (given.timeout_s, given.cell_timeout_s) == (60, 0.5)
    assert (defaults.timeout_s, defaults.cell_timeout_s) == (30, 5)


async def test_a_default_timeout_over_the_limit_is_refused_too(make_service: MakeService) -> None:
    service = await make_service(max_timeout_s=60, default_cell_timeout_s=120)
    with pytest.raises(Unprocessable) as refused:
        await service.submit(ADMIN, SubmitRequest("tiny.ipynb"))
    assert refused.value.message == "cell_timeout_s must be between 0 and 60 seconds, got 120"


# read ----------------------------------------------------------------------------------------------------------------
async def test_list_filters_by_owner_state_notebook_and_schedule(service: JobService) -> None:
    a1 = await service.submit(ADA, SubmitRequest("tiny.ipynb"))
    a2 = await service.submit(ADA, SubmitRequest("params.ipynb", {"n": 2}, schedule_id=7))
    b1 = await service.submit(BOB, SubmitRequest("tiny.ipynb"))
    a3 = await service.submit(ADA, SubmitRequest("tiny.ipynb"))
    await service.cancel(ADA, a3.id)

    def ids(found: tuple[Any, int]) -> tuple[list[int], int]:
        jobs, total = found
        return [job.id for job in jobs], total

    assert ids(await service.list(ADA)) == ([a3.id, a2.id, a1.id], 3)  # newest first, only ada's
    assert ids(await service.list(BOB)) == ([b1.id], 1)
    assert ids(await service.list(ADMIN)) == ([a3.id, b1.id, a2.id, a1.id], 4)
    assert ids(await service.list(ADA, states=[JobState.QUEUED])) == ([a2.id, a1.id], 2)
    assert ids(await service.list(ADA, states=[JobState.CANCELLED, JobState.FAILED])) == ([a3.id], 1)
    assert ids(await service.list(ADA, notebook="tiny.ipynb")) == ([a3.id, a1.id], 2)
    assert ids(await service.list(ADMIN, notebook="tiny.ipynb", states=[JobState.QUEUED])) == ([b1.id, a1.id], 2)
    assert ids(await service.list(ADA, schedule_id=7)) == ([a2.id], 1)
    assert ids(await service.list(BOB, schedule_id=7)) == ([], 0)
    # limit and offset page through the list; the total counts all that match.
    assert ids(await service.list(ADMIN, limit=2)) == ([a3.id, b1.id], 4)
    assert ids(await service.list(ADMIN, limit=2, offset=2)) == ([a2.id, a1.id], 4)


async def test_someone_elses_job_is_not_found_as_a_missing_one_is(service: JobService) -> None:
    job = await service.submit(ADA, SubmitRequest("tiny.ipynb"))
    assert await service.get(ADA, job.id) == job
    assert await service.get(ADMIN, job.id) == job

    for user, job_id in ((BOB, job.id), (ADA, job.id + 1), (ADA, 0), (ADA, 2**63)):
        with pytest.raises(NotFound) as refused:
            await service.get(user, job_id)
        assert (refused.value.code, refused.value.message) == ("job_not_found", f"no job {job_id}")


# wait ----------------------------------------------------------------------------------------------------------------
async def test_wait_for_a_job_that_stays_queued_times_out(service: JobService) -> None:
    job = await service.submit(ADMIN, SubmitRequest("tiny.ipynb"))
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError, match=f"job {job.id} did not finish within 0.3 s"):
        await service.wait(job.id, timeout_s=0.3)
    assert asyncio.get_running_loop().time() - started >= 0.3


async def test_wait_returns_a_job_cancelled_meanwhile(service: JobService) -> None:
    job = await service.submit(ADMIN, SubmitRequest("tiny.ipynb"))
    waiting = asyncio.create_task(service.wait(job.id, timeout_s=30))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    await service.cancel(ADMIN, job.id)
    ended = await waiting
    assert (ended.id, ended.state) == (job.id, JobState.CANCELLED)


async def test_wait_sees_a_job_that_ended_elsewhere_through_the_store(service: JobService) -> None:
    """A job run by another node ends without an event here: the store is read again (every second)."""
    job = await service.submit(ADMIN, SubmitRequest("tiny.ipynb"))
    waiting = asyncio.create_task(service.wait(job.id, timeout_s=30))
    await asyncio.sleep(0.1)
    running = transition(job, JobState.RUNNING)
    assert await service.store.save(running, expect_state=JobState.QUEUED)
    failed = transition(running, JobState.FAILED, error=JobError("kernel died"))
    assert await service.store.save(failed, expect_state=JobState.RUNNING)
    ended = await waiting
    assert (ended.state, ended.error) == (JobState.FAILED, JobError("kernel died"))


async def test_wait_for_an_unknown_job_is_not_found(service: JobService) -> None:
    with pytest.raises(NotFound, match="no job 4242"):
        await service.wait(4242, timeout_s=5)


# cancel --------------------------------------------------------------------------------------------------------------
async def test_cancel_of_a_queued_job_ends_it_at_once(service: JobService, heard: list[Event]) -> None:
    job = await service.submit(ADA, SubmitRequest("tiny.ipynb"))
    heard.clear()  # the job.queued of the submit
    cancelled = await service.cancel(ADA, job.id)

    assert cancelled.state is JobState.CANCELLED
    assert cancelled.cancel_requested is True
    assert cancelled.error == JobError("cancelled by request")
    assert cancelled.finished_at is not None and cancelled.finished_at >= job.created_at
    assert await service.store.get_job(job.id) == cancelled
    assert [(e.type, e.data["job"], e.data["error"]["reason"]) for e in heard] == [
        ("job.cancelled", job.id, "cancelled by request")
    ]
    assert await service.store.oldest_queued(limit=10) == []

    # Cancelling it again changes nothing and says nothing.
    assert await service.cancel(ADA, job.id) == cancelled
    assert len(heard) == 1


async def test_cancel_of_someone_elses_job_is_not_found_and_leaves_it(service: JobService) -> None:
    job = await service.submit(ADA, SubmitRequest("tiny.ipynb"))
    with pytest.raises(NotFound):
        await service.cancel(BOB, job.id)
    assert await service.store.get_job(job.id) == job  # still queued, not asked to cancel
