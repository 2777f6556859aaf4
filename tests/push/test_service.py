"""The push service (nbrelay.push.Push) on its own, over a real hub (memory:// and sql://) and a real SQLite
store: connection limits, what a session is told on open (stream positions, snapshot), subscribes and resumes."""

from __future__ import annotations

import pytest

from nbrelay.hub.hub import parse_position
from nbrelay.jobs import User
from nbrelay.models import Event, Job, JobState, transition
from nbrelay.push import Push
from nbrelay.push.transports.session import Close, CloseCode, Send, Session, Subscribe
from nbrelay.push.transports.sse import SseConnection
from nbrelay.store.base import NewJob

ALICE, BOB, ADMIN = User("alice"), User("bob"), User("root", admin=True)


def session(user: User) -> Session:
    return Session(user, heartbeat_s=25, idle_timeout_s=0)


def connect(push: Push, user: User) -> SseConnection:
    """A connection the service admitted and counts (an SSE one: it needs no socket until it streams)."""
    assert push.admit(user) is None
    connection = SseConnection(session(user), push)
    push.add(connection)
    return connection


def sample(push: Push, name: str, **labels: str) -> float:
    return push.metrics.registry.get_sample_value(name, labels) or 0.0


async def add_job(push: Push, owner: str, state: JobState = JobState.QUEUED) -> Job:
    store = push.jobs.store
    job = await store.add_job(NewJob(owner=owner, notebook=f"{owner}.ipynb", kernel_name="python3"))
    if state is JobState.QUEUED:
        return job
    running = transition(job, JobState.RUNNING, worker="w1")
    assert await store.save(running, expect_state=JobState.QUEUED)
    if state is JobState.RUNNING:
        return running
    done = transition(running, state)
    assert await store.save(done, expect_state=JobState.RUNNING, expect_worker="w1")
    return done


async def job_event(push: Push, job: Job, n: int) -> None:
    await push.on_job_event(Event("job.output", {"owner": job.owner, "job": job.id, "text": f"line {n}"}))


# connections -----------------------------------------------------------------------------------------------------
async def test_a_users_connection_over_the_cap_is_refused_and_a_close_frees_its_slot(push: Push) -> None:
    first, _ = connect(push, ALICE), connect(push, ALICE)
    assert push.admit(ALICE) == Close(CloseCode.CONNECTION_LIMIT, "too many connections for this user")
    assert push.admit(BOB) is None  # the cap is each user's
    push.remove(first, 1000)
    push.remove(first, 1000)  # a connection removed twice frees one slot, once
    assert push.admit(ALICE) is None
    connect(push, ALICE)
    assert push.admit(ALICE) == Close(CloseCode.CONNECTION_LIMIT, "too many connections for this user")
    assert sample(push, "nbrelay_connections", transport="sse") == 2
    assert sample(push, "nbrelay_disconnects_total", transport="sse", code="1000") == 1


async def test_the_server_wide_cap_refuses_every_user(push: Push) -> None:
    connect(push, ALICE)
    connect(push, ALICE)
    bobs = connect(push, BOB)
    assert push.admit(ADMIN) == Close(CloseCode.CONNECTION_LIMIT, "the server is at its connection limit")
    push.remove(bobs, None)
    assert push.admit(ADMIN) is None
    assert sample(push, "nbrelay_disconnects_total", transport="sse", code="1000") == 1  # no code: a clean close


async def test_close_all_tells_every_connection_to_come_back(push: Push) -> None:
    connections = [connect(push, ALICE), connect(push, BOB)]
    await push.close_all(wait_s=0.01)
    restart = Close(CloseCode.SERVER_RESTART, "server restarting: reconnect and resume")
    assert [c.close_request for c in connections] == [restart, restart]
    late = connect(push, ALICE)  # a request that was under way: it is told the same at once
    assert late.close_request == restart


# what a session is told on open ---------------------------------------------------------------------------------
async def test_default_positions_are_where_the_users_and_the_broadcast_streams_stand(push: Push) -> None:
    fresh = await push.default_positions(ALICE)
    assert set(fresh) == {"user:alice", "broadcast"}
    assert set(await push.default_positions(ADMIN)) == {"user:root", "broadcast"}  # not everyone's: they subscribe
    assert all(parse_position(p) is not None and p.endswith(":0") for p in fresh.values())

    job = await add_job(push, "alice")
    for n in range(3):
        await job_event(push, job, n)
    notice = await push.notice("maintenance at noon")
    await job_event(push, await add_job(push, "bob"), 0)

    alice = await push.default_positions(ALICE)
    assert alice["broadcast"] == notice.id
    epoch = fresh["user:alice"].rpartition(":")[0]
    assert alice["user:alice"] == f"{epoch}:3"  # the stream's epoch, past the job's three events
    assert (await push.default_positions(BOB))["user:bob"].endswith(":1")
    # A position is where a resume starts: nothing after it is missed, nothing before it is sent again.
    resumed = await push.resume(session(ALICE), "user:alice", alice["user:alice"])
    assert resumed == [
        Send({"op": "recovered", "stream": "user:alice", "recovered": True, "position": alice["user:alice"]})
    ]


async def test_a_users_snapshot_holds_their_unfinished_jobs_and_an_admins_everyones(push: Push) -> None:
    queued = await add_job(push, "alice")
    running = await add_job(push, "alice", JobState.RUNNING)
    await add_job(push, "alice", JobState.SUCCEEDED)
    await add_job(push, "alice", JobState.FAILED)
    bobs = await add_job(push, "bob")

    mine = await push.snapshot(ALICE)
    assert sorted((j["id"], j["owner"], j["state"], j["queue_position"]) for j in mine) == [
        (queued.id, "alice", "queued", 1),
        (running.id, "alice", "running", None),
    ]
    everyone = await push.snapshot(ADMIN)
    assert sorted((j["id"], j["owner"], j["state"], j["queue_position"]) for j in everyone) == [
        (queued.id, "alice", "queued", 1),
        (running.id, "alice", "running", None),
        (bobs.id, "bob", "queued", 2),
    ]
    assert await push.snapshot(User("carol")) == []


async def test_a_snapshot_past_its_size_keeps_every_running_job(push: Push, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found from outside: with 10,000 queued, the newest 500 were sent and the running job was not."""
    monkeypatch.setattr("nbrelay.push.service.SNAPSHOT_JOBS", 5)
    running = await add_job(push, "alice", JobState.RUNNING)
    queued = [await add_job(push, "alice") for _ in range(8)]
    sent = await push.snapshot(ALICE)
    assert [j["id"] for j in sent] == [j.id for j in reversed(queued[-4:])] + [running.id]  # newest first


# subscribes and resumes -----------------------------------------------------------------------------------------
async def test_resume_answers_with_what_was_missed_and_counts_resumes(push: Push) -> None:
    job = await add_job(push, "alice")
    for n in range(4):
        await job_event(push, job, n)
    epoch, last = parse_position(await push.hub.position("user:alice")) or ("", 0)
    assert last == 4

    recovered, *missed = await push.resume(session(ALICE), "user:alice", f"{epoch}:2")
    assert recovered == Send({"op": "recovered", "stream": "user:alice", "recovered": True, "position": f"{epoch}:4"})
    assert [(e.stream, e.offset, e.data["text"]) for e in missed] == [
        ("user:alice", 3, "line 2"),
        ("user:alice", 4, "line 3"),
    ]

    # Another epoch (the broker restarted empty): not recovered, and the session moves to where the stream is.
    stale = session(ALICE)
    assert await push.resume(stale, "user:alice", "elsewhere:2") == [
        Send({"op": "recovered", "stream": "user:alice", "recovered": False, "position": f"{epoch}:4"})
    ]
    assert stale.positions["user:alice"] == (epoch, 4)

    assert sample(push, "nbrelay_resumes_total", recovered="true") == 1
    assert sample(push, "nbrelay_resumes_total", recovered="false") == 1


async def test_a_resume_older_than_the_history_is_not_recovered(push: Push) -> None:
    job = await add_job(push, "alice")
    for n in range(8):  # history_size is 5: offsets 1 to 3 are gone
        await job_event(push, job, n)
    epoch, _ = parse_position(await push.hub.position("user:alice")) or ("", 0)
    assert await push.resume(session(ALICE), "user:alice", f"{epoch}:1") == [
        Send({"op": "recovered", "stream": "user:alice", "recovered": False, "position": f"{epoch}:8"})
    ]
    assert sample(push, "nbrelay_resumes_total", recovered="false") == 1


async def test_follow_refuses_streams_that_are_not_the_users(push: Push) -> None:
    bobs = await add_job(push, "bob")
    alice = session(ALICE)
    subscription = push.hub.subscription()
    for stream in ("user:bob", f"job:{bobs.id}", "job:424242"):
        alice.positions[stream] = (None, 0)  # as the session's subscribe left it
        refusal = Send(
            {"op": "error", "code": "forbidden", "reason": f"not allowed to follow {stream}", "stream": stream}
        )
        assert await push.follow(alice, subscription, Subscribe(stream, None)) == [refusal]
        assert stream not in alice.positions
    assert subscription.streams == set()
    # An admin follows anyone's job.
    assert await push.follow(session(ADMIN), subscription, Subscribe(f"job:{bobs.id}", None)) == []
    assert subscription.streams == {f"job:{bobs.id}"}
    assert sample(push, "nbrelay_resumes_total", recovered="true") == 0


async def test_follow_with_since_resumes_then_live_events_follow(push: Push) -> None:
    job = await add_job(push, "alice")
    await job_event(push, job, 0)
    first = await push.hub.position(f"job:{job.id}")
    await job_event(push, job, 1)
    alice = session(ALICE)
    subscription = push.hub.subscription()
    answer, missed = await push.follow(alice, subscription, Subscribe(f"job:{job.id}", first))
    assert isinstance(answer, Send) and answer.message["recovered"] is True
    assert isinstance(missed, Event) and missed.data["text"] == "line 1"
    await job_event(push, job, 2)
    live = [e for e in subscription.queue if e.stream == f"job:{job.id}"]
    assert [e.data["text"] for e in live] == ["line 2"]
    assert sample(push, "nbrelay_resumes_total", recovered="true") == 1
