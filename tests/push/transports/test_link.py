"""What both v1 WebSockets share (transports/link.py), fed directly: admission, the opening messages, the
session's actions, liveness and the overflow close, over a real push service (tests/push/conftest.py). The
connection here is a SessionLink whose I/O is a list: the part under test is the one without I/O."""

from __future__ import annotations

import logging

import pytest

from nbrelay.errors import HubUnavailable
from nbrelay.hub.hub import Subscription
from nbrelay.jobs import User
from nbrelay.push import Push
from nbrelay.push.transports.link import UNAUTHORIZED, SessionLink, open_session, opening, unavailable
from nbrelay.push.transports.session import UNAVAILABLE, Close, CloseCode, Send, Session, Subscribe
from nbrelay.store.base import NewJob

ALICE = User("alice")


class Recorded(SessionLink):
    """A connection whose frames go to `carried` and `closes`; its hub subscriber is a real Subscription."""

    transport = "ws"

    def __init__(self, push: Push, session: Session | None):
        self.push = push
        self.session = session
        self.subscription = push.hub.subscription()
        self.carried: list[Send | Subscribe] = []
        self.closes: list[Close] = []
        self.heartbeats = 0

    @property
    def subscriber(self) -> Subscription:
        return self.subscription

    def in_order(self, action: Send | Subscribe) -> None:
        self.carried.append(action)

    def close_soon(self, close: Close) -> None:
        self.closes.append(close)

    def heartbeat(self, session: Session, now: float) -> Close | None:
        self.heartbeats += 1
        return None


def opened(push: Push, user: User = ALICE) -> Session:
    session = open_session(push, user)
    assert isinstance(session, Session), session
    return session


async def test_open_session_refuses_nobody_and_a_user_over_the_cap(push: Push) -> None:
    assert open_session(push, None) == UNAUTHORIZED == Close(4500, "unauthorized: log in, or pass ?token=")
    session = opened(push)
    assert (session.user, session.heartbeat_s, session.idle_timeout_s) == (
        ALICE,
        push.settings.heartbeat_s,
        push.settings.client_idle_timeout_s,
    )
    for _ in range(push.settings.max_connections_per_user):
        push.add(Recorded(push, opened(push)))
    assert open_session(push, ALICE) == Close(CloseCode.CONNECTION_LIMIT, "too many connections for this user")


async def test_opening_is_the_welcome_then_the_snapshot(push: Push) -> None:
    job = await push.jobs.store.add_job(NewJob(owner="alice", notebook="a.ipynb", kernel_name="python3"))
    await push.notice("hello")
    session = opened(push)
    messages = [message async for message in opening(push, session)]
    assert [m["op"] for m in messages] == ["welcome", "snapshot"]
    assert messages[0] == {
        "op": "welcome",
        "protocol": 1,
        "user": "alice",
        "admin": False,
        "heartbeat_s": push.settings.heartbeat_s,
        "streams": await push.default_positions(ALICE),
    }
    assert messages[0]["streams"]["broadcast"].endswith(":1")
    assert [(j["id"], j["state"], j["queue_position"]) for j in messages[1]["jobs"]] == [(job.id, "queued", 1)]


async def test_the_sessions_actions_are_carried_out(push: Push) -> None:
    link = Recorded(push, opened(push))
    link.on_text('{"op":"ping"}')
    link.on_text('{"op":"subscribe","stream":"user:alice","since":"e1:3"}')
    assert link.carried == [Send({"op": "pong"}), Subscribe("user:alice", "e1:3")]
    await push.hub.follow(link.subscriber, "user:alice")  # what the transport's follow does
    link.on_text('{"op":"unsubscribe","stream":"user:alice"}')
    assert link.subscription.streams == set()  # unsubscribed at once, not in order behind the others
    assert len(link.carried) == 2 and link.closes == []
    link.on_text("x" * 5000)
    assert link.closes == [Close(CloseCode.BAD_REQUEST, "message over 4096 bytes")]


async def test_tick_closes_a_silent_client_and_otherwise_leaves_the_heartbeat_to_the_connection(push: Push) -> None:
    session = opened(push)
    session.idle_timeout_s = 10
    link = Recorded(push, session)
    link.tick(session.last_heard + 5)
    assert (link.closes, link.heartbeats) == ([], 1)
    link.tick(session.last_heard + 11)
    assert link.closes == [Close(CloseCode.NO_PONG, "no message from the client in 10 s")]
    assert link.heartbeats == 1  # closing: no ping frame after it
    opening_link = Recorded(push, None)
    opening_link.tick(1e12)  # still opening: nothing to check yet
    assert (opening_link.closes, opening_link.heartbeats) == ([], 0)


async def test_an_overflow_closes_with_4008_and_is_counted(push: Push) -> None:
    link = Recorded(push, opened(push))
    assert link.slow_consumer() == Close(CloseCode.SLOW_CONSUMER, "too slow to keep up: reconnect and resume")
    assert push.metrics.registry.get_sample_value("nbrelay_queue_drops_total", {"kind": "overflow"}) == 1


def test_an_unavailable_hub_closes_with_1013_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="nbrelay.push.transports.link"):
        close = unavailable(HubUnavailable("the broker did not answer"))
    assert close == UNAVAILABLE and close.code == 1013
    assert caplog.messages == ["push connection closed: the broker did not answer"]
