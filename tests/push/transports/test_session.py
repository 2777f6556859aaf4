"""The session protocol fed message by message, with no sockets."""

from __future__ import annotations

import json

import pytest

from nbrelay.jobs import User
from nbrelay.models import Event
from nbrelay.push.transports.session import (
    MAX_STREAMS,
    Close,
    CloseCode,
    Send,
    Session,
    Subscribe,
    Unsubscribe,
    may_read,
)


def session(**kw: object) -> Session:
    return Session(User("alice"), heartbeat_s=25, idle_timeout_s=60, now=0.0, **kw)  # type: ignore[arg-type]


def event(offset: int, epoch: str = "e1", stream: str = "user:alice") -> Event:
    return Event("notice", {"n": offset}, stream=stream, offset=offset, epoch=epoch)


def subscribed(s: Session, text: str) -> None:
    """A subscribe read and carried out, as a transport does."""
    (action,) = s.receive(text, now=1)
    assert isinstance(action, Subscribe)
    s.following(action)


def test_welcome_names_the_user_heartbeat_and_positions() -> None:
    message = session().welcome({"user:alice": "e1:4"}).message
    assert message == {
        "op": "welcome",
        "protocol": 1,
        "user": "alice",
        "admin": False,
        "heartbeat_s": 25,
        "streams": {"user:alice": "e1:4"},
    }


def test_ping_gets_pong() -> None:
    assert session().receive('{"op":"ping"}', now=1) == [Send({"op": "pong"})]


def test_subscribe_and_unsubscribe() -> None:
    s = session()
    (subscribe,) = s.receive(json.dumps({"op": "subscribe", "stream": "job:7", "since": "k3f9:40"}), now=1)
    assert subscribe == Subscribe("job:7", "k3f9:40")
    assert isinstance(subscribe, Subscribe)
    s.following(subscribe)  # as the transport carries it out
    assert s.positions["job:7"] == ("k3f9", 40)
    assert s.receive('{"op":"unsubscribe","stream":"job:7"}', now=2) == [Unsubscribe("job:7")]
    assert "job:7" not in s.positions


def test_subscribing_again_with_since_resends_what_a_live_event_on_its_way_would_have_skipped() -> None:
    """Found from outside: a stream followed live and subscribed to again with `since` lost the start of its
    history: the position was set as the message was read, a live event still on its way then moved it past the
    history, and the history was dropped as seen."""
    s = session()
    (first,) = s.receive('{"op":"subscribe","stream":"user:alice","since":"e1:4"}', now=1)
    assert isinstance(first, Subscribe)
    s.following(first)
    assert s.accept(event(5)) is True
    (again,) = s.receive('{"op":"subscribe","stream":"user:alice","since":"e1:2"}', now=2)
    assert isinstance(again, Subscribe)
    assert s.accept(event(6)) is True  # delivered before the subscribe is carried out, in order
    s.following(again)
    assert [s.accept(event(n)) for n in (3, 4, 5, 6)] == [True] * 4  # the history asked for, then live again
    assert s.accept(event(6)) is False


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_message"),
        ('{"op": "fly"}', "unknown_op"),
        ('{"op": "subscribe"}', "bad_stream"),
        ('{"op": "subscribe", "stream": "secrets"}', "bad_stream"),
        ('{"op": "subscribe", "stream": "job:x"}', "bad_stream"),
        ('{"op": "subscribe", "stream": "job:0001"}', "bad_stream"),
        ('{"op": "subscribe", "stream": "job:1\\n"}', "bad_stream"),
        ('{"op": "subscribe", "stream": "user:alice\\n"}', "bad_stream"),
        ('{"op": "subscribe", "stream": "broadcast\\n"}', "bad_stream"),
        ('{"op": "subscribe", "stream": "job:7", "since": "yesterday"}', "bad_since"),
        ('{"op": "subscribe", "stream": "job:7", "since": 5}', "bad_since"),
    ],
)
def test_bad_messages_get_errors_not_closes(text: str, code: str) -> None:
    (action,) = session().receive(text, now=1)
    assert isinstance(action, Send) and action.message["op"] == "error" and action.message["code"] == code


def test_oversized_message_closes_with_bad_request() -> None:
    (action,) = session().receive('{"op":"ping","pad":"' + "x" * 5000 + '"}', now=1)
    assert action == Close(CloseCode.BAD_REQUEST, "message over 4096 bytes")


def test_too_many_streams() -> None:
    s = session(rate_per_s=1e9, burst=10_000)
    for i in range(MAX_STREAMS):
        assert isinstance(s.receive(json.dumps({"op": "subscribe", "stream": f"job:{i}"}), now=1)[0], Subscribe)
    (action,) = s.receive('{"op":"subscribe","stream":"job:99999"}', now=1)
    assert isinstance(action, Send) and action.message["code"] == "too_many_streams"


def ops(messages: list[dict[str, object]]) -> list[object]:
    return [m["op"] if m["op"] != "event" else m["id"] for m in messages]


def test_delivery_dedupes_by_offset_within_an_epoch() -> None:
    s = session()
    subscribed(s, '{"op":"subscribe","stream":"user:alice","since":"e1:2"}')
    assert s.deliver(event(2)) == []  # already had it
    assert ops(s.deliver(event(3))) == ["e1:3"]
    assert s.deliver(event(3)) == []
    assert s.deliver(event(5, stream="job:1")) == []  # not subscribed


def test_an_event_of_a_new_epoch_says_first_that_history_was_lost() -> None:
    """The stream's history went (its broker restarted empty): a live client learns it and re-reads state."""
    s = session()
    subscribed(s, '{"op":"subscribe","stream":"user:alice","since":"e1:2"}')
    assert ops(s.deliver(event(3))) == ["e1:3"]
    notice, message = s.deliver(event(1, epoch="e2"))
    assert notice == {"op": "recovered", "stream": "user:alice", "recovered": False, "position": "e2:0"}
    assert message["id"] == "e2:1"
    assert ops(s.deliver(event(2, epoch="e2"))) == ["e2:2"]  # once told, the new epoch goes on as usual
    assert s.deliver(event(1, epoch="e2")) == []
    # Events may start past 1 in the new epoch (some went before this one): the position says where it is.
    assert s.deliver(event(4, epoch="e3"))[0]["position"] == "e3:3"


def test_the_first_epoch_a_subscription_sees_is_no_change() -> None:
    s = session()
    subscribed(s, '{"op":"subscribe","stream":"user:alice"}')  # no position: no epoch known yet
    assert ops(s.deliver(event(7, epoch="e5"))) == ["e5:7"]
    assert ops(s.deliver(event(8, epoch="e5"))) == ["e5:8"]


def test_unrecovered_resume_moves_the_position_to_now() -> None:
    s = session()
    subscribed(s, '{"op":"subscribe","stream":"user:alice","since":"old:3"}')
    answer = s.resumed("user:alice", False, "e9", 17)
    assert answer.message == {"op": "recovered", "stream": "user:alice", "recovered": False, "position": "e9:17"}
    assert s.deliver(event(17, epoch="e9")) == [] and ops(s.deliver(event(18, epoch="e9"))) == ["e9:18"]


def test_silence_closes_with_4012() -> None:
    s = session()
    assert s.check_idle(now=59) is None
    s.receive('{"op":"ping"}', now=59)
    assert s.check_idle(now=118) is None
    assert s.check_idle(now=120) == Close(CloseCode.NO_PONG, "no message from the client in 60 s")


def test_flooding_closes_with_4013() -> None:
    s = session(rate_per_s=10, burst=20)
    actions = [a for _ in range(21) for a in s.receive('{"op":"ping"}', now=1.0)]
    assert actions[-1] == Close(CloseCode.TOO_MANY_REQUESTS, "too many messages: slow down")
    assert session(rate_per_s=10, burst=20).receive('{"op":"ping"}', now=1.0) == [Send({"op": "pong"})]


def test_close_reasons_fit_a_close_frame() -> None:
    s = session()
    assert len(s.overflowed().reason.encode()) < 120


def test_who_may_read_what() -> None:
    alice, admin = User("alice"), User("root", admin=True)
    assert may_read(alice, "user:alice") and may_read(alice, "broadcast")
    assert not may_read(alice, "user:bob")
    assert may_read(admin, "user:bob")
