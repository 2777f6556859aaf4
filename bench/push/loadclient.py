"""A lean WebSocket load client: one process holding many connections on one asyncio (uvloop) loop.

    python bench/push/loadclient.py --port P --proto nbrelay|socketio --count K [--first I]
        [--stream broadcast | --stream 'user:u{i}'] [--concurrency C] [--ping-s 25] [--max-seconds 1200]
    [--source 127.0.0.N]

The WebSocket framing is written out by hand (asyncio.Protocol, no per-connection tasks) so that the client
spends as little CPU per message as possible and the server under test stays the bottleneck. Client frames
use the all-zero masking key (valid framing; the payload is then sent as is).

Protocols:
  nbrelay   welcome → send {"op":"subscribe","stream":…} and {"op":"ping"}; ready on the first pong (messages
            are handled in order, so the subscription is in place); an app ping every --ping-s seconds.
  socketio  Engine.IO open packet "0{…}" → send "40"; ready on "40{…}"; answers Engine.IO pings "2" with "3".
Both answer WebSocket ping frames with pong frames. Events carry data.t (publish time); latency = now - t.

Talks to its parent by lines: it prints {"ready": n, "failed": m, …} once all connections are up, then answers
stdin commands: `stats`, `reset` (forget received counts and latencies), `dump PATH` (latencies as float64
pairs (from t, from due) to PATH), `quit`. It exits on `quit`, on end of stdin (parent gone), or after --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import resource
import sys
import time
from array import array
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shared import raise_fd_limit

_loads = json.loads
_now = time.time
ZERO_MASK = b"\x00\x00\x00\x00"
MAX_FRAME = 1 << 24


def frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + ZERO_MASK + payload


class Stats:
    def __init__(self) -> None:
        self.received = 0
        self.latencies = array("d")
        self.closed: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.open = 0

    def record(self, data: dict[str, Any]) -> None:
        """One event: latency from publish start, and from the time the paced schedule wanted it published."""
        now = _now()
        self.latencies.append(now - data["t"])
        self.latencies.append(now - data["due"])
        self.received += 1

    def close(self, code: int) -> None:
        self.open -= 1
        self.closed[str(code)] = self.closed.get(str(code), 0) + 1

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Conn(asyncio.Protocol):
    def __init__(self, proto: str, host: str, port: int, path: str, stream: str, stats: Stats):
        self.proto = proto
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.stream = stream
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.fragments: list[bytes] = []
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.alive = False

    # transport -------------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.alive = True
        self.stats.open += 1
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.alive:
            self.alive = False
            self.stats.close(self.close_code if self.close_code is not None else 1006)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready ({self.close_code})"))

    def send_text(self, text: str) -> None:
        if self.transport is not None and self.alive:
            self.transport.write(frame(0x1, text.encode()))

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.stats.error("handshake " + bytes(buf[:12]).decode(errors="replace"))
                self._abort()
                return
            del buf[: end + 4]
            self.upgraded = True
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            length, pos = b1 & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    return
                length, pos = int.from_bytes(buf[2:4], "big"), 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length, pos = int.from_bytes(buf[2:10], "big"), 10
            if length > MAX_FRAME:
                self.stats.error("frame too large")
                self._abort()
                return
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            self._frame(b0 & 0x80, b0 & 0x0F, payload)

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (0x0, 0x1, 0x2):
            self.fragments.append(payload)
            if fin:
                text = b"".join(self.fragments).decode()
                self.fragments = []
                self._message(text)
        elif opcode == 0x9:  # ping frame: pong with the same payload
            if self.transport is not None:
                self.transport.write(frame(0xA, payload))
        elif opcode == 0x8:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if self.transport is not None:
                self.transport.write(frame(0x8, payload[:2]))
                self.transport.close()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and self.alive:
            with contextlib.suppress(Exception):
                self.transport.write(frame(0x8, (1000).to_bytes(2, "big")))
                self.transport.close()

    # protocols -------------------------------------------------------------------------------------------------
    def _message(self, text: str) -> None:
        if self.proto == "nbrelay":
            message = _loads(text)
            op = message.get("op")
            if op == "event":
                self.stats.record(message["data"])
            elif op == "welcome":
                self.send_text(json.dumps({"op": "subscribe", "stream": self.stream}))
                self.send_text('{"op":"ping"}')
            elif op == "pong":
                if not self.ready.done():
                    self.ready.set_result(None)
            elif op == "error":
                self.stats.error(f"nbrelay error {message.get('code')}")
        else:
            kind = text[:2]
            if kind == "42":
                self.stats.record(_loads(text[2:])[1])
            elif text == "2":
                self.send_text("3")
            elif kind == "40":
                if not self.ready.done():
                    self.ready.set_result(None)
            elif text[:1] == "0":
                self.send_text("40")
            elif kind == "44":
                self.stats.error("socketio connect_error")


class Client:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.stats = Stats()
        self.conns: list[Conn] = []
        self.path = "/ws" if args.proto == "nbrelay" else "/socket.io/?EIO=4&transport=websocket"

    async def open_one(self, index: int, gate: asyncio.Semaphore) -> bool:
        args = self.args
        async with gate:
            stream = args.stream.format(i=index)
            try:
                loop = asyncio.get_running_loop()
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: Conn(args.proto, args.host, args.port, self.path, stream, self.stats),
                        args.host,
                        args.port,
                        local_addr=(args.source, 0) if args.source else None,
                    ),
                    timeout=30,
                )
                self.conns.append(conn)
                await asyncio.wait_for(conn.ready, timeout=60)
                return True
            except (OSError, ConnectionError, TimeoutError) as exc:
                self.stats.error(type(exc).__name__ + ": " + str(exc)[:80])
                return False

    async def pinger(self) -> None:
        """nbrelay clients send an app-level ping every --ping-s seconds, spread evenly over the period."""
        period = max(1, int(self.args.ping_s))
        tick = 0
        while True:
            await asyncio.sleep(1.0)
            tick += 1
            for conn in self.conns[tick % period :: period]:
                if conn.ready.done():
                    conn.send_text('{"op":"ping"}')

    async def commands(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                return
            command, _, rest = line.decode().strip().partition(" ")
            if command == "stats":
                self.reply(self.snapshot())
            elif command == "reset":
                self.stats.received = 0
                self.stats.latencies = array("d")
                self.reply({"reset": True})
            elif command == "dump":
                latencies = self.stats.latencies
                await asyncio.to_thread(Path(rest).write_bytes, latencies.tobytes())
                self.reply({"dumped": len(latencies) // 2})
            elif command == "quit":
                return
            else:
                self.reply({"error": f"unknown command {command!r}"})

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "received": self.stats.received,
            "open": self.stats.open,
            "closed": self.stats.closed,
            "errors": self.stats.errors,
            "cpu_s": usage.ru_utime + usage.ru_stime,
        }

    @staticmethod
    def reply(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def run(self) -> None:
        args = self.args
        gate = asyncio.Semaphore(args.concurrency)
        started = time.monotonic()
        # from the start: opening thousands of connections can take longer than the server's idle timeout
        pinger = asyncio.create_task(self.pinger()) if args.proto == "nbrelay" else None
        results = await asyncio.gather(*(self.open_one(args.first + i, gate) for i in range(args.count)))
        ok = sum(results)
        self.reply({"ready": ok, "failed": args.count - ok, "open_s": time.monotonic() - started, **self.snapshot()})
        try:
            await asyncio.wait_for(self.commands(), timeout=args.max_seconds)
        except TimeoutError:
            pass
        finally:
            if pinger is not None:
                pinger.cancel()
            for conn in self.conns:
                conn.close()
            await asyncio.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--source",
        default="",
        help="local address to connect from, e.g. 127.0.0.3: each source address has its own ~28,000 ephemeral "
        "ports towards the server, so several processes with different sources get past that limit",
    )
    parser.add_argument("--proto", choices=["nbrelay", "socketio"], required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="index of the first connection ({i} in --stream)")
    parser.add_argument("--stream", default="broadcast", help="nbrelay stream; {i} is the connection index")
    parser.add_argument("--concurrency", type=int, default=250, help="handshakes in flight at once")
    parser.add_argument("--ping-s", type=float, default=25.0)
    parser.add_argument("--max-seconds", type=float, default=1200.0)
    args = parser.parse_args()
    needed = args.count + 64
    soft, _ = raise_fd_limit(needed)
    if soft != resource.RLIM_INFINITY and soft < needed:
        Client.reply({"fatal": f"open-file limit {soft} < {needed} needed for {args.count} connections"})
        sys.exit(3)
    import uvloop

    uvloop.run(Client(args).run())


if __name__ == "__main__":
    main()
