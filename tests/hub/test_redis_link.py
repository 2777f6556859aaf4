"""The redis:// hub's own connections against real Redis servers: pipelined commands answered in order, refusals
that leave the connection usable, pub/sub pushes, a connection lost or silent failing every waiting command, the
login (password, database, name) and TLS; on the default event loop and on uvloop, which the server runs."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import uvloop

from nbrelay.hub.backends.redis_link import Address, Link
from nbrelay.hub.backends.redis_wire import ReplyError
from tests.conftest import fresh_redis_url
from tests.hub.conftest import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def shared() -> Iterator[tuple[str, str]]:
    """The machine's Redis (its URL without the prefix) and a key prefix of this test's own."""
    with fresh_redis_url() as url:
        base, _, prefix = url.partition("?prefix=")
        yield base, prefix


async def open_link(url: str, name: str = "nbrelay-test-link", **kwargs: object) -> Link:
    return await Link.open(Address.from_url(url), name=name, timeout_s=2.0, **kwargs)  # type: ignore[arg-type]


async def test_commands_sent_at_once_are_answered_in_order(shared: tuple[str, str]) -> None:
    base, prefix = shared
    link = await open_link(base)
    try:
        replies = [link.call("INCR", f"{prefix}:n") for _ in range(300)]
        assert await asyncio.gather(*replies) == list(range(1, 301))
        assert await link.call("SET", f"{prefix}:s", "é\r\n") == "OK"
        assert await link.call("GET", f"{prefix}:s") == "é\r\n".encode()
    finally:
        link.close()


async def test_a_refused_command_fails_alone(shared: tuple[str, str]) -> None:
    base, prefix = shared
    link = await open_link(base)
    try:
        first, refused, after = link.call("INCR", f"{prefix}:n"), link.call("NOSUCHCOMMAND"), link.call("PING")
        assert await first == 1
        with pytest.raises(ReplyError, match="unknown command") as caught:
            await refused
        assert caught.value.code == "ERR"
        assert await after == "PONG" and link.is_open
    finally:
        link.close()


async def test_a_command_redis_does_not_answer_fails_the_connection(shared: tuple[str, str]) -> None:
    """BLPOP on an empty list never answers: after timeout_s the call and every one behind it fail with
    TimeoutError and the connection is closed (a reply that came late would go to the wrong caller)."""
    base, prefix = shared
    link = await Link.open(Address.from_url(base), name="nbrelay-test-link", timeout_s=0.3)
    blocked, behind = link.call("BLPOP", f"{prefix}:empty", 0), link.call("PING")
    with pytest.raises(TimeoutError, match=r"did not answer in 0\.3 s"):
        await blocked
    with pytest.raises(TimeoutError):
        await behind
    assert not link.is_open
    assert isinstance(await asyncio.wait_for(link.wait_lost(), 1), TimeoutError)
    with pytest.raises(TimeoutError):
        await link.call("PING")  # at once: the connection is gone


async def test_a_connection_redis_cuts_fails_what_waits_on_it(shared: tuple[str, str]) -> None:
    base, prefix = shared
    name = f"{prefix}-cut"
    link = await open_link(base, name=name)
    waiting = link.call("BLPOP", f"{prefix}:empty", 0)
    await asyncio.sleep(0.05)
    with redis.Redis.from_url(base, decode_responses=True) as admin:
        (mine,) = [c for c in admin.client_list() if c["name"] == name]  # CLIENT SETNAME named it
        admin.client_kill_filter(_id=mine["id"])
    with pytest.raises(ConnectionError, match="lost the connection to Redis"):
        await asyncio.wait_for(waiting, 2)
    assert not link.is_open
    assert "lost the connection" in str(await asyncio.wait_for(link.wait_lost(), 1))


async def test_pubsub_messages_are_pushed_between_replies(shared: tuple[str, str]) -> None:
    """RESP3: a subscribed connection still runs commands; what Redis pushes goes to on_push, replies to calls."""
    base, prefix = shared
    pushed: asyncio.Queue[object] = asyncio.Queue()
    subscriber = await open_link(base, on_push=pushed.put_nowait)
    publisher = await open_link(base)
    try:
        subscriber.send("SUBSCRIBE", f"{prefix}:a", f"{prefix}:b")
        assert await pushed.get() == [b"subscribe", f"{prefix}:a".encode(), 1]
        assert await pushed.get() == [b"subscribe", f"{prefix}:b".encode(), 2]
        assert await publisher.call("PUBLISH", f"{prefix}:b", "1:1 {}") == 1
        assert await pushed.get() == [b"message", f"{prefix}:b".encode(), b"1:1 {}"]
        # Its own message, published by a script on the same connection: both come back, each to its place.
        script = "redis.call('PUBLISH', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])"
        assert await subscriber.call("EVAL", script, 2, f"{prefix}:a", f"{prefix}:n", "mine") == 1
        assert await pushed.get() == [b"message", f"{prefix}:a".encode(), b"mine"]
        assert await subscriber.call("PING") == "PONG" and pushed.empty()
    finally:
        subscriber.close()
        publisher.close()


async def test_a_redis_without_resp3_is_named_in_the_error(tmp_path: Path) -> None:
    """HELLO 3 is what the hub needs (Redis 6 and newer); a Redis that does not know HELLO (as Redis 5, here one
    that has it renamed away) is named as the cause."""
    server = RedisServer(tmp_path, extra=["--rename-command", "HELLO", ""]).start()
    try:
        with pytest.raises(ConnectionError, match=r"Redis refused HELLO: ERR unknown command .*needs Redis 6"):
            await open_link(server.url)
    finally:
        server.kill()


async def test_login_database_and_name(tmp_path: Path) -> None:
    """HELLO with the URL's password and the name, SELECT its database; a wrong password is refused with
    Redis's reason and without the password in the message."""
    server = RedisServer(tmp_path, password="s3cret-pw").start()
    try:
        link = await open_link(server.url.replace("/0", "/3"), name="nbrelay-test-named")
        try:
            assert await link.call("SET", "k", "in three") == "OK"
            with redis.Redis(port=server.port, password="s3cret-pw", db=3, decode_responses=True) as admin:
                assert admin.get("k") == "in three"
                assert "nbrelay-test-named" in {c["name"] for c in admin.client_list()}
        finally:
            link.close()
        with pytest.raises(ConnectionError, match="Redis refused HELLO: WRONGPASS") as refused:
            await open_link(server.url.replace("s3cret-pw", "not-it").replace("/0", "/3"))  # SELECT after: fails too
        assert "not-it" not in str(refused.value)
    finally:
        server.kill()


async def test_tls(tls_redis_server: RedisServer) -> None:
    """rediss:// with the server's certificate trusted (ssl_ca_certs); without it, the connection is refused."""
    assert tls_redis_server.tls is not None
    trusted = f"{tls_redis_server.url}?ssl_ca_certs={tls_redis_server.tls.cert}"
    link = await open_link(trusted)
    try:
        assert await link.call("PING") == "PONG"
    finally:
        link.close()
    with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
        await open_link(tls_redis_server.url)
    unchecked = await open_link(f"{tls_redis_server.url}?ssl_cert_reqs=none")
    try:
        assert await unchecked.call("PING") == "PONG"
    finally:
        unchecked.close()


def test_on_uvloop(shared: tuple[str, str]) -> None:
    """The server's event loop: its transports are not asyncio's classes."""
    base, prefix = shared

    async def main() -> list[object]:
        pushed: asyncio.Queue[object] = asyncio.Queue()
        link = await open_link(base, on_push=pushed.put_nowait)
        other = await open_link(base)
        try:
            link.send("SUBSCRIBE", f"{prefix}:c")
            confirmed = await pushed.get()
            await other.call("PUBLISH", f"{prefix}:c", secrets.token_hex(2))
            return [confirmed, (await pushed.get())[0], await other.call("INCR", f"{prefix}:n")]  # type: ignore[index]
        finally:
            link.close()
            other.close()

    assert uvloop.run(main()) == [[b"subscribe", f"{prefix}:c".encode(), 1], b"message", 1]
