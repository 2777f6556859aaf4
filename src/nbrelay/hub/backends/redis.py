"""The hub backend shared by several web nodes and workers (NBRELAY_BROKER_URL=redis://host:port/db): history in
Redis Streams, offsets and epochs assigned in Redis, fan-out by pub/sub to the nodes that watch a stream.

Keys and channels, all under the prefix (`?prefix=name`, default "nbrelay"), so installations and tests can
share one Redis:
    <prefix>:hub:<stream>:meta     hash {epoch, last}: the stream's epoch and last offset
    <prefix>:hub:<stream>:events   Redis Stream, entry ids "<offset>-0", fields t (ms) and e (the event's JSON)
    <prefix>:hub:<stream>          pub/sub channel: "<epoch>:<offset> <the event's JSON>" per new event
One Lua script assigns the offsets, appends and publishes, for all streams of an event at once, so the order on
a channel is the offset order and nothing is published that history does not hold. A node subscribes to the
channel of a stream only while it has a subscriber for it; it re-reads history where it sees a gap in the offsets
and, after its connection comes back, for every stream it watches.

A node talks to Redis over one connection of its own (redis_link.py, RESP3): the scripts (publishes and reads)
go out pipelined, and pub/sub messages come back as pushes on the same connection, handed on as they are read,
unless one must wait for a re-read of history (then they wait, in order, in the inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import secrets
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from nbrelay.errors import HubUnavailable
from nbrelay.hub.backends.base import Deliver, History, stop
from nbrelay.hub.backends.redis_link import Address, Link
from nbrelay.hub.backends.redis_wire import Reply, ReplyError
from nbrelay.models import Event

log = logging.getLogger(__name__)

PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.-]")  # CLIENT SETNAME takes no spaces
DEFAULT_PREFIX = "nbrelay"
# A stream's epoch and last offset outlive its events: an idle stream whose events expired keeps its epoch, so
# its live clients are not told "history lost" for history they never needed. A day, or the TTL if longer.
_META_TTL_MIN_S = 86_400.0
_COMMAND_TIMEOUT_S = 2.0  # a publish (or a read) waits no longer than this for Redis
_PING_EVERY_S = 5.0  # a connection with no pub/sub message for this long is pinged (no pong in 2 s: it is dead)
_RECONNECT_FIRST_S, _RECONNECT_MAX_S = 0.1, 5.0
_MAX_OFFSET = 2**52  # what Lua's numbers hold exactly

# A stream's epoch, made when its meta is gone: a new stream, or one whose data Redis lost (restarted empty,
# evicted, expired). What is left of its old events goes too, so nobody resumes into a hole.
_POSITION = """
local function position(meta, events, fresh, meta_ttl)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then
    return epoch
  end
  redis.call('DEL', events)
  redis.call('HSET', meta, 'epoch', fresh, 'last', 0)
  redis.call('PEXPIRE', meta, meta_ttl)
  return fresh
end
"""
# KEYS: each stream's meta and events keys, in pairs. ARGV: a fresh epoch, history size, events TTL (ms), meta
# TTL (ms), the event's time (ms), its JSON, then each stream's channel. Returns epoch and offset per stream.
_PUBLISH = (
    _POSITION
    + """
local fresh, size, ttl, meta_ttl, ts, body = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local placed = {}
for i = 1, #KEYS / 2 do
  local meta, events = KEYS[2 * i - 1], KEYS[2 * i]
  local epoch = position(meta, events, fresh, meta_ttl)
  local offset = string.format('%d', redis.call('HINCRBY', meta, 'last', 1))
  redis.call('XADD', events, 'MAXLEN', '~', size, offset .. '-0', 't', ts, 'e', body)
  redis.call('PEXPIRE', events, ttl)
  redis.call('PEXPIRE', meta, meta_ttl)
  redis.call('PUBLISH', ARGV[6 + i], epoch .. ':' .. offset .. ' ' .. body)
  placed[2 * i - 1] = epoch
  placed[2 * i] = offset
end
return placed
"""
)
# KEYS: the stream's meta and events keys. ARGV: a fresh epoch, meta TTL (ms), the offset to read after ('':
# none), history size. Returns epoch, last offset and the kept entries after that offset, in one snapshot.
_READ = (
    _POSITION
    + """
local epoch = position(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
local last = tonumber(redis.call('HGET', KEYS[1], 'last'))
if ARGV[3] == '' then
  return {epoch, last}
end
local from = math.max(tonumber(ARGV[3]) + 1, last - tonumber(ARGV[4]) + 1)
return {epoch, last, redis.call('XRANGE', KEYS[2], string.format('%d', from) .. '-0', '+')}
"""
)


def parse_url(url: str) -> tuple[str, str]:
    """redis://host:port/db?prefix=name → (the URL for redis-py, the prefix); ValueError for what is not one."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError(f"unusable broker URL {url!r}: expected redis://host:port/db (or rediss:// for TLS)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((value for key, value in query if key == "prefix"), DEFAULT_PREFIX)
    if not PREFIX.match(prefix):
        raise ValueError(f"unusable prefix {prefix!r} in the broker URL: letters, digits, '_', '.' or '-', up to 64")
    rest = urlencode([(key, value) for key, value in query if key != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


@dataclass(frozen=True)
class LuaScript:
    """A script run by its SHA1 (EVALSHA); its text goes once, when Redis does not have it (NOSCRIPT)."""

    text: str

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()


@dataclass(eq=False)
class _Watch:
    """A stream this node follows: what it has handed on (to see gaps) and whether Redis confirmed it."""

    ready: asyncio.Event = field(default_factory=asyncio.Event)
    epoch: str | None = None  # of the last event handed on (or of the stream when watched); None: not known
    last: int = 0
    subscribed_on: Link | None = None  # the connection its SUBSCRIBE went out on
    reread: bool = False  # the connection dropped: re-read history once subscribed again


@dataclass(frozen=True, slots=True)
class _Message:
    """A pub/sub message of a stream, read: where its event stands and the event's JSON."""

    stream: str
    epoch: str
    offset: int
    body: bytes


class RedisBackend:
    def __init__(self, url: str, *, history_size: int = 1000, history_ttl_s: float = 3600.0):
        address, self.prefix = parse_url(url)
        parts = urlsplit(address)
        self.where = f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}{parts.path}"  # for messages: no password
        self.history_size = history_size
        self.history_ttl_s = history_ttl_s
        self._ttl_ms = max(1, int(history_ttl_s * 1000))
        self._meta_ttl_ms = int(max(history_ttl_s, _META_TTL_MIN_S) * 1000)
        self._keys = f"{self.prefix}:hub:"
        # One connection (redis_link.py) carries the scripts, pipelined, and pub/sub. Whoever needs it first opens
        # it, and again after it is lost; _listen then subscribes anew and re-reads what may have been published
        # meanwhile. Its name in CLIENT LIST says whose it is.
        self._address = Address.from_url(address)
        node = f"{_NOT_IN_NAME.sub('-', socket.gethostname())}:{os.getpid()}:{secrets.token_hex(2)}"
        self.client_name = f"{self.prefix}:hub:{node}"
        self._link: Link | None = None
        self._connecting: asyncio.Future[Link] | None = None
        self.publish_script = LuaScript(_PUBLISH)
        self.read_script = LuaScript(_READ)
        self._deliver: Deliver | None = None
        self._watched: dict[str, _Watch] = {}
        self._confirming: dict[str, deque[_Watch]] = {}  # per channel, the watches whose SUBSCRIBE is unanswered
        self._pubsub: Link | None = None
        # What arrived on it and waits for history to be re-read first (or for what came before it), in order.
        self._inbox: deque[_Message | str] = deque()  # messages, and channels of confirmations
        self._draining: asyncio.Task[None] | None = None
        self._heard = False  # something arrived on it since _keep_alive last looked
        # The JSON of this node's publishes in flight → their events. Identical JSON is the same event (time
        # included), so which of them answers does not matter.
        self._own: dict[bytes, Event] = {}
        self._listener: asyncio.Task[None] | None = None

    # life cycle ----------------------------------------------------------------------------------------------
    async def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        try:
            await self._connection()
        except OSError as exc:  # ConnectionError, TimeoutError, ssl.SSLError
            # Not fatal: the service runs, events fail to publish (and say so) until Redis is back.
            log.error("hub: Redis at %s is not reachable (%s); retrying in the background", self.where, exc)
        self._listener = asyncio.create_task(self._listen(), name="hub-redis-listener")

    async def close(self) -> None:
        if self._listener is not None:
            await stop([self._listener])
            self._listener = None
        self._deliver = None
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        if self._link is not None:
            self._link.close()

    async def ping(self) -> None:
        """Redis answers, and this node's pub/sub is on the connection that answered (while the listener
        reconnects, other nodes' events do not reach this one)."""
        try:
            link = await self._connection()
            await link.call("PING")
        except (ReplyError, OSError) as exc:
            raise HubUnavailable(f"the hub's Redis at {self.where} did not answer: {exc}") from exc
        if self._pubsub is not link:
            raise HubUnavailable(f"the hub's Redis at {self.where} answers, but this node does not listen on it yet")

    # keys ----------------------------------------------------------------------------------------------------
    def channel(self, stream: str) -> str:
        return self._keys + stream

    def _stream_keys(self, stream: str) -> list[str]:
        return [f"{self._keys}{stream}:meta", f"{self._keys}{stream}:events"]

    # publish and read ----------------------------------------------------------------------------------------
    async def publish(self, event: Event, streams: Sequence[str]) -> list[Event]:
        text = event.json() if event.stream is None else Event(event.type, event.data, ts=event.ts).json()
        body = text.encode()
        keys = [key for stream in streams for key in self._stream_keys(stream)]
        args: list[str | bytes | int] = [_fresh_epoch(), self.history_size, self._ttl_ms, self._meta_ttl_ms]
        args += [int(event.ts.timestamp() * 1000), body, *(self.channel(stream) for stream in streams)]
        self._own[body] = event  # its pub/sub messages come back before the reply: they need not be decoded
        try:
            placed = await self._run(self.publish_script, keys, args)
        except (ReplyError, OSError) as exc:  # ConnectionError and TimeoutError are OSErrors
            raise HubUnavailable(f"the hub's Redis at {self.where} did not take a {event.type} event: {exc}") from exc
        finally:
            self._own.pop(body, None)
        return [
            event.positioned(stream, int(placed[2 * i + 1]), placed[2 * i].decode()) for i, stream in enumerate(streams)
        ]

    async def position(self, stream: str) -> tuple[str, int]:
        """Where the stream stands. A stream this node watches is known here (its live events keep it current,
        give or take one in flight, which a resume from it replays); any other is read from Redis, since the
        other nodes may have published to it meanwhile: a position remembered from earlier would send the
        client's resume back into history that may be gone (recovered: false for nothing lost)."""
        watch = self._watched.get(stream)
        if watch is not None and watch.epoch is not None and watch.ready.is_set() and watch.subscribed_on:
            return watch.epoch, watch.last
        epoch, last = await self._call_read(stream, "")
        return epoch.decode(), int(last)

    async def history(self, stream: str, after: int) -> History:
        epoch_bytes, last_reply, entries = await self._call_read(stream, min(after, _MAX_OFFSET))
        epoch, last = epoch_bytes.decode(), int(last_reply)
        cutoff_ms = (time.time() - self.history_ttl_s) * 1000
        events: list[Event] = []
        for entry_id, fields in entries:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            if not events and float(values[b"t"]) < cutoff_ms:
                continue  # older than the TTL (only from the front: what is kept has no holes)
            offset = int(entry_id.partition(b"-")[0])
            events.append(Event.from_dict(json.loads(values[b"e"])).positioned(stream, offset, epoch))
        # The oldest kept offset after `after`: what a resume decides by (see History).
        first = events[0].offset if events and events[0].offset is not None else last + 1
        return History(epoch=epoch, last_offset=last, first_offset=first, events=events)

    async def _call_read(self, stream: str, after: int | str) -> list[Any]:
        args: list[str | int] = [_fresh_epoch(), self._meta_ttl_ms, after, self.history_size]
        try:
            return list(await self._run(self.read_script, self._stream_keys(stream), args))
        except (ReplyError, OSError) as exc:
            raise HubUnavailable(f"the hub's Redis at {self.where} did not answer for {stream}: {exc}") from exc

    async def _run(self, script: LuaScript, keys: list[str], args: Sequence[str | bytes | int]) -> Reply:
        """Run a script on the connection (sending its text once if Redis does not know it)."""
        link = self._link if self._link is not None and self._link.is_open else await self._connection()
        try:
            return await link.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except ReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
            return await link.call("EVAL", script.text, len(keys), *keys, *args)

    async def _connection(self) -> Link:
        """The connection to Redis; a new one if there is none or it was lost. Everyone who asks while a connect is
        under way waits for that one and shares its outcome: while Redis is away, a burst of publishes costs one
        attempt (up to 2 s when nothing answers), not one each in turn."""
        if self._link is not None and self._link.is_open:
            return self._link
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)  # one caller given up does not stop it for the others

    def _connected(self, connecting: asyncio.Future[Link]) -> None:
        """A connect ended: the next caller starts a new one if need be (even when nobody waited for this one)."""
        if self._connecting is connecting:
            self._connecting = None
        _ignore(connecting)

    async def _connect(self) -> Link:
        self._link = await Link.open(
            self._address, name=self.client_name, timeout_s=_COMMAND_TIMEOUT_S, on_push=self._on_push
        )
        return self._link

    # watching ------------------------------------------------------------------------------------------------
    async def watch(self, stream: str) -> None:
        watch = self._watched.get(stream)
        if watch is None:
            watch = self._watched[stream] = _Watch()
        await self._baseline(stream, watch)
        # Without a connection (Redis away), _listen subscribes to every watched stream once it has one; and a
        # stream unwatched (or watched anew) meanwhile is not this watch's business any more. Commands to the
        # connection go out at once and in the order given: a stream's SUBSCRIBE and UNSUBSCRIBE reach
        # Redis in the order the hub watched and unwatched it.
        pubsub = self._pubsub
        if pubsub is not None and self._watched.get(stream) is watch and watch.subscribed_on is not pubsub:
            self._subscribe(pubsub, [stream])
        await watch.ready.wait()

    async def unwatch(self, stream: str) -> None:
        watch = self._watched.pop(stream, None)
        if watch is None:
            return
        watch.ready.set()  # nobody waits for it any more
        if self._pubsub is not None and self._pubsub.is_open:  # a lost connection unsubscribes by itself
            self._pubsub.send("UNSUBSCRIBE", self.channel(stream))

    async def _baseline(self, stream: str, watch: _Watch) -> None:
        """Note where the stream is before its SUBSCRIBE goes out: whatever comes after is handed on, live or,
        after a gap or a reconnect, from history. (An event or two from just before the subscription may come
        too; a subscriber's session drops those it already has.) Without Redis, only what arrives live is."""
        if watch.epoch is None:
            with contextlib.suppress(HubUnavailable):
                epoch, last = await self._call_read(stream, "")
                if watch.epoch is None:
                    watch.epoch, watch.last = epoch.decode(), int(last)

    def _subscribe(self, pubsub: Link, streams: list[str]) -> None:
        """Send one SUBSCRIBE for `streams`; the confirmations make them ready."""
        if not pubsub.is_open:
            return  # lost: _listen starts over and subscribes to every watched stream
        for stream in streams:
            watch = self._watched[stream]
            watch.subscribed_on = pubsub
            self._confirming.setdefault(self.channel(stream), deque()).append(watch)
        pubsub.send("SUBSCRIBE", *(self.channel(stream) for stream in streams))

    # pub/sub ---------------------------------------------------------------------------------------------------
    async def _listen(self) -> None:
        """Pub/sub on the node's connection: connect, subscribe to every watched stream, hand on what arrives; when
        it fails, log it and connect again, backing off while Redis stays away. Never ends but by cancellation."""
        delay = _RECONNECT_FIRST_S
        failing = False
        while True:
            pubsub: Link | None = None
            try:
                pubsub = await self._connection()
                for stream, watch in list(self._watched.items()):
                    await self._baseline(stream, watch)
                self._pubsub = pubsub
                if self._watched:
                    self._subscribe(pubsub, list(self._watched))
                if failing:
                    log.warning("hub: the connection to Redis at %s is back", self.where)
                failing, delay = False, _RECONNECT_FIRST_S
                await self._keep_alive(pubsub)
            except OSError as exc:  # ConnectionError, TimeoutError
                if not failing:
                    log.warning("hub: lost the connection to Redis at %s (%s); reconnecting", self.where, exc)
                failing = True
            except Exception:  # a bug must not end fan-out for good: say so, and start over
                log.exception("hub: the Redis listener failed; reconnecting")
                failing = True
            finally:
                self._pubsub = None
                self._confirming.clear()
                self._inbox.clear()
                if self._draining is not None:  # what it was handing on comes again from history
                    self._draining.cancel()
                    self._draining = None
                for watch in self._watched.values():
                    watch.subscribed_on = None
                    watch.reread = watch.epoch is not None  # what was published while away comes from history
                if pubsub is not None:
                    pubsub.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RECONNECT_MAX_S)

    async def _keep_alive(self, pubsub: Link) -> None:
        """Until the connection is lost (then raise why): ping it when no message came for _PING_EVERY_S; the link
        fails when the pong does not come in its timeout."""
        while True:
            self._heard = False
            try:
                async with asyncio.timeout(_PING_EVERY_S):  # not wait_for, which may swallow a cancel (3.11)
                    lost = await pubsub.wait_lost()
            except TimeoutError:
                if not self._heard:
                    pubsub.call("PING").add_done_callback(_ignore)
                continue
            raise lost

    def _on_push(self, reply: Reply) -> None:
        """A message or a confirmation as it is read: handed on at once, unless it must wait for history to be
        re-read (or for what came before it to be handed on)."""
        self._heard = True
        try:
            item = self._read_push(reply)
            if item is None:
                return
            if not self._inbox and not self._must_wait(item):
                self._take(item)
                return
        except Exception:
            self._start_over()
            return
        self._inbox.append(item)
        if self._draining is None:
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    def _read_push(self, reply: Reply) -> _Message | str | None:
        """A message; the channel of a SUBSCRIBE's confirmation; None for what the hub has no use for."""
        if not isinstance(reply, list) or len(reply) < 2:
            return None
        kind = reply[0]
        if kind == b"message":  # "<epoch>:<offset> <the event's JSON>"
            head, _, body = reply[2].partition(b" ")
            epoch, _, offset = head.rpartition(b":")
            return _Message(self._stream_of(reply[1].decode()), epoch.decode(), int(offset), body)
        if kind == b"subscribe":
            return str(reply[1].decode())
        return None

    def _must_wait(self, item: _Message | str) -> bool:
        if isinstance(item, _Message):
            watch = self._watched.get(item.stream)
            if watch is None or watch.epoch is None:
                return False
            return item.offset > (watch.last if item.epoch == watch.epoch else 0) + 1  # a gap: read history first
        waiting = self._confirming.get(item)
        return waiting[0].reread if waiting else False

    def _take(self, item: _Message | str) -> None:
        if isinstance(item, _Message):
            self._take_message(item)
        elif (watch := self._confirmed(item)) is not None:
            watch.ready.set()

    async def _drain(self) -> None:
        """Hand on what waits in the inbox, in order, re-reading history where it has to."""
        try:
            while self._inbox:
                item = self._inbox[0]
                if isinstance(item, _Message):
                    if self._must_wait(item):
                        watch = self._watched[item.stream]
                        if item.epoch != watch.epoch:
                            watch.epoch, watch.last = item.epoch, 0  # the stream started over (Redis lost it)
                        await self._catch_up(item.stream, watch)
                    self._take_message(item)
                elif (confirmed := self._confirmed(item)) is not None:
                    if confirmed.reread:
                        confirmed.reread = False
                        await self._catch_up(self._stream_of(item), confirmed)
                    confirmed.ready.set()
                self._inbox.popleft()
        except Exception:
            self._start_over()
        finally:
            if self._draining is asyncio.current_task():  # not cancelled for a new connection's
                self._draining = None

    def _start_over(self) -> None:
        """A bug must not end fan-out for good: say so, and drop the connection (_listen connects again and re-reads
        history for every watched stream)."""
        log.exception("hub: handing on what came from Redis failed; reconnecting")
        if self._pubsub is not None:
            self._pubsub.close()

    def _stream_of(self, channel: str) -> str:
        return channel[len(self._keys) :]

    def _confirmed(self, channel: str) -> _Watch | None:
        """The watch whose SUBSCRIBE Redis just confirmed; None if unwatched (or watched anew) since."""
        waiting = self._confirming.get(channel)
        watch = waiting.popleft() if waiting else None
        if waiting is not None and not waiting:
            del self._confirming[channel]
        if watch is None or self._watched.get(self._stream_of(channel)) is not watch:
            return None
        return watch

    def _take_message(self, message: _Message) -> None:
        watch = self._watched.get(message.stream)
        if watch is None:
            return  # unwatched meanwhile
        if watch.epoch is not None and message.epoch != watch.epoch:
            watch.epoch, watch.last = message.epoch, 0  # the stream started over (Redis lost it): a new epoch from 1
        if watch.epoch == message.epoch and message.offset <= watch.last:
            return  # handed on already (a re-read overlaps what pub/sub brings)
        own = self._own.get(message.body)  # this node's publish, in flight: the event it was made from
        event = own if own is not None else Event.from_dict(json.loads(message.body))
        self._hand_on(message.stream, watch, event.positioned(message.stream, message.offset, message.epoch))

    async def _catch_up(self, stream: str, watch: _Watch) -> None:
        """Hand on, from history, what came after the last event handed on (after a gap or a reconnect)."""
        if watch.epoch is None:
            return
        try:
            history = await self.history(stream, after=watch.last)
            if history.epoch != watch.epoch:  # lost meanwhile: all of the new epoch
                watch.epoch, watch.last = history.epoch, 0
                history = await self.history(stream, after=0)
        except HubUnavailable as exc:
            log.warning("hub: could not re-read %s: %s", stream, exc)
            return
        if history.first_offset > watch.last + 1:
            log.warning(
                "hub: events %d to %d of %s are no longer in history; this node's subscribers miss them",
                watch.last + 1,
                history.first_offset - 1,
                stream,
            )
        for event in history.events:
            self._hand_on(stream, watch, event)

    def _hand_on(self, stream: str, watch: _Watch, event: Event) -> None:
        assert event.offset is not None and event.epoch is not None
        if watch.epoch == event.epoch and event.offset <= watch.last:
            return  # handed on already (a re-read overlaps what pub/sub brings)
        watch.epoch, watch.last = event.epoch, event.offset
        if self._deliver is not None:
            self._deliver(event)


def _fresh_epoch() -> str:
    """The epoch a script gives a stream that has none (it is sent with every publish and read, and used only then):
    random, not secret. The module's generator, seeded from the OS and again in every forked child, so processes
    forked from one (prefork workers) do not make the same epochs; the OS's random bytes cost a system call each."""
    return f"{random.getrandbits(32):08x}"


def _ignore(outcome: asyncio.Future[Any]) -> None:
    """Retrieve an outcome nobody may wait for (a ping's reply: when it fails, the connection's loss says so; a
    connect's: its callers got it, if any were left)."""
    if not outcome.cancelled():
        outcome.exception()
