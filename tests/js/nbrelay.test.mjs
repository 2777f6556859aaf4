// Unit tests of the browser client against fake WebSocket/EventSource/timers: deterministic, no network.
// Run: node --test tests/js/

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import NbrelayClient, {
  NbrelayClient as NamedExport,
  backoffDelay,
  composeLastEventId,
  isTerminalClose,
  parseLastEventId,
  parsePosition,
} from "../../src/nbrelay/web/nbrelay.js";
import { FakeClock, makeFakeEventSource, makeFakeWebSocket } from "./fakes.mjs";

const WELCOME = {
  op: "welcome",
  protocol: 1,
  user: "alice",
  admin: false,
  heartbeat_s: 25,
  streams: { "user:alice": "k3f9:42", broadcast: "ab12:0" },
};
const WINDOW_MS = 25_000 + 10_000; // default heartbeat + grace

function setup(options = {}) {
  const clock = new FakeClock();
  const WS = makeFakeWebSocket();
  const ES = makeFakeEventSource();
  const client = new NbrelayClient({
    base: "/nbrelay",
    WebSocket: WS,
    EventSource: ES,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    location: { href: "http://page.test/app/", protocol: "http:", host: "page.test" },
    fetch: null, // no health probe unless a test asks for one
    ...options,
  });
  const log = [];
  for (const kind of ["welcome", "snapshot", "recovered", "status", "error", "*"]) {
    client.on(kind, (payload) => log.push([kind, payload]));
  }
  const of = (kind) => log.filter(([k]) => k === kind).map(([, payload]) => payload);
  return { client, clock, WS, ES, log, of, offsets: () => of("*").map((e) => `${e.stream}@${e.id}`) };
}

function welcome(ws, extra = {}) {
  ws.open();
  ws.receive({ ...WELCOME, ...extra });
}

function event(stream, epoch, offset, type = "job.progress", data = {}) {
  return { stream, offset, epoch, id: `${epoch}:${offset}`, type, ts: "2024-05-01T12:00:00Z", data };
}

const wsEvent = (...args) => ({ op: "event", ...event(...args) });

/** The `since` the last subscribe for `stream` carried on this socket (undefined: none). */
const sinceOf = (ws, stream) => ws.ops("subscribe").findLast((m) => m.stream === stream)?.since;

/** Make the current socket fail, then let the backoff timer open the next one. Waits the longest backoff
 * (20 s), which is shorter than the watchdog window (35 s), so the new socket is not timed out meanwhile. */
function failBeforeWelcome(WS, clock, code = 1006) {
  WS.last.drop(code);
  clock.advance(20_000);
}

// -------------------------------------------------------------------------------------------------------------

describe("module", () => {
  test("default export is the NbrelayClient class", () => {
    assert.equal(NbrelayClient, NamedExport);
    assert.equal(typeof NbrelayClient, "function");
  });

  test("status is 'closed' before connect() and nothing is opened", () => {
    const { client, WS } = setup();
    assert.equal(client.status, "closed");
    assert.equal(WS.instances.length, 0);
  });
});

describe("URLs", () => {
  test("ws:// for an http page, base path kept, trailing slash ignored", () => {
    const { client, WS } = setup({ base: "/nbrelay/" });
    client.connect();
    assert.equal(WS.last.url, "ws://page.test/nbrelay/ws");
  });

  test("wss:// for an https page, with an encoded token", () => {
    const { client } = setup({
      base: "",
      token: "t k/+=",
      location: { href: "https://example.org:8443/x/y", protocol: "https:", host: "example.org:8443" },
    });
    assert.equal(client.wsUrl(), "wss://example.org:8443/ws?token=t%20k%2F%2B%3D");
  });

  test("a bare {protocol, host} location is enough", () => {
    const { client } = setup({ location: { protocol: "https:", host: "h.test" } });
    assert.equal(client.wsUrl(), "wss://h.test/nbrelay/ws");
  });

  test("an absolute base wins over the page", () => {
    const { client } = setup({ base: "https://push.example.org/nbrelay" });
    assert.equal(client.wsUrl(), "wss://push.example.org/nbrelay/ws");
  });

  test("a relative base without a page location fails at connect(), clearly", () => {
    const { client } = setup({ location: null });
    assert.throws(() => client.connect(), /WebSocket URL/);
  });

  test("SSE URL: streams readable, token, last_event_id composed from lastIds and URI-encoded", () => {
    const { client } = setup({ token: "s3cret" });
    client.lastIds["user:alice"] = "k3f9:42";
    client.lastIds["job:7"] = "e7:5";
    const url = client.sseUrl(["user:alice", "job:7", "broadcast"]);
    assert.equal(
      url,
      "/nbrelay/sse?streams=user:alice,job:7,broadcast&token=s3cret" +
        `&last_event_id=${encodeURIComponent("user:alice=k3f9:42,job:7=e7:5")}`,
    );
  });

  test("SSE URL escapes '+' and '@' in stream names (a bare '+' would arrive as a space)", () => {
    const { client } = setup();
    assert.equal(client.sseUrl(["user:a+b@c"]), "/nbrelay/sse?streams=user:a%2Bb%40c");
  });
});

describe("1. connect, welcome, subscribe", () => {
  test("welcome → live; subscribes user:<me>, broadcast and streams added before connect", () => {
    const { client, WS, of } = setup();
    client.subscribe("job:7");
    client.connect();
    assert.equal(client.status, "connecting");
    const ws = WS.last;
    ws.open();
    assert.deepEqual(ws.sent, [], "nothing is sent before the welcome");
    ws.receive(WELCOME);
    assert.equal(client.status, "live");
    assert.equal(client.user, "alice");
    assert.deepEqual(ws.ops("subscribe"), [
      { op: "subscribe", stream: "broadcast" },
      { op: "subscribe", stream: "job:7" },
      { op: "subscribe", stream: "user:alice" },
    ]);
    const { op, ...fields } = WELCOME;
    assert.deepEqual(of("welcome"), [fields], "handlers get the welcome without 'op'");
  });

  test("configured streams replace the defaults", () => {
    const { client, WS } = setup({ streams: ["job:3"] });
    client.connect();
    welcome(WS.last);
    assert.deepEqual(WS.last.ops("subscribe"), [{ op: "subscribe", stream: "job:3" }]);
  });

  test("subscribe carries since = lastIds[stream] when known", () => {
    const { client, WS } = setup({ streams: ["user:alice", "job:7"] });
    client.lastIds["job:7"] = "e7:12";
    client.connect();
    welcome(WS.last);
    assert.deepEqual(WS.last.ops("subscribe"), [
      { op: "subscribe", stream: "user:alice" },
      { op: "subscribe", stream: "job:7", since: "e7:12" },
    ]);
  });

  test("subscribe() while live is sent at once, only once", () => {
    const { client, WS } = setup();
    client.connect();
    welcome(WS.last);
    client.subscribe("job:9");
    client.subscribe("job:9");
    assert.deepEqual(WS.last.ops("subscribe").at(-1), { op: "subscribe", stream: "job:9" });
    assert.equal(WS.last.ops("subscribe").filter((m) => m.stream === "job:9").length, 1);
    assert.deepEqual(client.streams, ["broadcast", "user:alice", "job:9"]);
  });

  test("unsubscribe() sends the op, forgets the position and drops events still in flight", () => {
    const { client, WS, offsets } = setup();
    client.connect();
    welcome(WS.last);
    client.subscribe("job:9");
    WS.last.receive(wsEvent("job:9", "e9", 1));
    client.unsubscribe("job:9");
    assert.deepEqual(WS.last.ops("unsubscribe"), [{ op: "unsubscribe", stream: "job:9" }]);
    assert.equal(client.lastIds["job:9"], undefined);
    WS.last.receive(wsEvent("job:9", "e9", 2));
    assert.deepEqual(offsets(), ["job:9@e9:1"]);
  });

  test("unsubscribing a default before the welcome keeps it out", () => {
    for (const [dropped, kept] of [["broadcast", "user:alice"], ["user:alice", "broadcast"]]) {
      const { client, WS } = setup();
      client.unsubscribe(dropped);
      client.connect();
      welcome(WS.last);
      assert.deepEqual(WS.last.ops("subscribe"), [{ op: "subscribe", stream: kept }]);
    }
  });

  test("snapshot is passed on", () => {
    const { client, WS, of } = setup();
    client.connect();
    welcome(WS.last);
    WS.last.receive({ op: "snapshot", jobs: [{ id: 7, state: "running" }] });
    assert.deepEqual(of("snapshot"), [{ jobs: [{ id: 7, state: "running" }] }]);
  });

  test("a 'forbidden' error for a stream is reported and the stream is not asked for again", () => {
    const { client, WS, clock, of } = setup();
    client.subscribe("job:8");
    client.connect();
    welcome(WS.last);
    WS.last.receive({ op: "error", code: "forbidden", reason: "not allowed to follow job:8", stream: "job:8" });
    assert.deepEqual(of("error"), [{ code: "forbidden", reason: "not allowed to follow job:8", stream: "job:8" }]);
    assert.equal(client.streams.includes("job:8"), false);
    WS.last.drop(1006);
    clock.advance(1000);
    welcome(WS.last);
    assert.deepEqual(
      WS.last.ops("subscribe").map((m) => m.stream),
      ["broadcast", "user:alice"],
    );
  });

  test("garbage frames and unknown ops are ignored", () => {
    const { client, WS, log } = setup();
    client.connect();
    welcome(WS.last);
    const before = log.length;
    WS.last.receive("not json");
    WS.last.receive({ op: "from-the-future" });
    WS.last.receive({ op: "pong" });
    assert.equal(log.length, before);
    assert.equal(client.status, "live");
  });
});

describe("2. events and dedupe", () => {
  test("dispatch to on(type) and on('*'); off() and the returned remover stop delivery", () => {
    const { client, WS } = setup();
    const progress = [];
    const all = [];
    const stopProgress = client.on("job.progress", (e) => progress.push(e.offset));
    const allFn = (e) => all.push(e.type);
    client.on("*", allFn);
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "k3f9", 1, "job.started"));
    WS.last.receive(wsEvent("user:alice", "k3f9", 2, "job.progress", { cell: 1, total: 4 }));
    assert.deepEqual(progress, [2]);
    assert.deepEqual(all, ["job.started", "job.progress"]);
    stopProgress();
    client.off("*", allFn);
    WS.last.receive(wsEvent("user:alice", "k3f9", 3, "job.progress"));
    assert.deepEqual(progress, [2]);
    assert.deepEqual(all, ["job.started", "job.progress"]);
  });

  test("handlers get the Event fields without 'op'", () => {
    const { client, WS, of } = setup();
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("broadcast", "ab12", 1, "notice", { text: "maintenance at 5" }));
    assert.deepEqual(of("*"), [event("broadcast", "ab12", 1, "notice", { text: "maintenance at 5" })]);
  });

  test("lastIds follow each stream", () => {
    const { client, WS } = setup();
    client.subscribe("job:7");
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "k3f9", 41));
    WS.last.receive(wsEvent("job:7", "e7", 3));
    WS.last.receive(wsEvent("user:alice", "k3f9", 42));
    assert.deepEqual(client.lastIds, { "user:alice": "k3f9:42", "job:7": "e7:3" });
  });

  test("same epoch and offset ≤ last seen → dropped", () => {
    const { client, WS, offsets } = setup();
    client.connect();
    welcome(WS.last);
    for (const offset of [5, 5, 4, 6, 1, 7]) WS.last.receive(wsEvent("user:alice", "k3f9", offset));
    assert.deepEqual(offsets(), ["user:alice@k3f9:5", "user:alice@k3f9:6", "user:alice@k3f9:7"]);
  });

  test("a different epoch is accepted and resets the stream's position", () => {
    const { client, WS, offsets } = setup();
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "old", 90));
    WS.last.receive(wsEvent("user:alice", "new", 1));
    assert.equal(client.lastIds["user:alice"], "new:1");
    WS.last.receive(wsEvent("user:alice", "new", 1)); // duplicate in the new epoch
    WS.last.receive(wsEvent("user:alice", "new", 2));
    assert.deepEqual(offsets(), ["user:alice@old:90", "user:alice@new:1", "user:alice@new:2"]);
  });

  test("dedupe is per stream", () => {
    const { client, WS, offsets } = setup();
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "k3f9", 5));
    WS.last.receive(wsEvent("broadcast", "ab12", 1));
    assert.deepEqual(offsets(), ["user:alice@k3f9:5", "broadcast@ab12:1"]);
  });

  test("a throwing handler does not stop the others or the client", (t) => {
    const reported = t.mock.method(console, "error", () => {});
    const { client, WS, offsets } = setup();
    client.on("job.progress", () => {
      throw new Error("app bug");
    });
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "k3f9", 1));
    WS.last.receive(wsEvent("user:alice", "k3f9", 2));
    assert.deepEqual(offsets(), ["user:alice@k3f9:1", "user:alice@k3f9:2"]);
    assert.equal(reported.mock.callCount(), 2);
  });
});

describe("3. recovered", () => {
  test("recovered:false → emitted for the app to re-read REST; lastIds jump to the position", () => {
    const { client, WS, clock, of } = setup();
    client.lastIds["user:alice"] = "old:17";
    client.connect();
    welcome(WS.last);
    assert.equal(sinceOf(WS.last, "user:alice"), "old:17");
    WS.last.receive({ op: "recovered", stream: "user:alice", recovered: false, position: "k3f9:42" });
    assert.deepEqual(of("recovered"), [{ stream: "user:alice", recovered: false, position: "k3f9:42" }]);
    assert.equal(client.lastIds["user:alice"], "k3f9:42");
    // the next resume asks from the new position
    WS.last.drop(1006);
    clock.advance(1000);
    welcome(WS.last);
    assert.equal(sinceOf(WS.last, "user:alice"), "k3f9:42");
  });

  test("recovered:true → emitted; the missed events follow and advance the position", () => {
    const { client, WS, of, offsets } = setup();
    client.lastIds["user:alice"] = "k3f9:40";
    client.connect();
    welcome(WS.last);
    WS.last.receive({ op: "recovered", stream: "user:alice", recovered: true, position: "k3f9:42" });
    assert.deepEqual(of("recovered"), [{ stream: "user:alice", recovered: true, position: "k3f9:42" }]);
    assert.equal(client.lastIds["user:alice"], "k3f9:40");
    WS.last.receive(wsEvent("user:alice", "k3f9", 41));
    WS.last.receive(wsEvent("user:alice", "k3f9", 42));
    assert.deepEqual(offsets(), ["user:alice@k3f9:41", "user:alice@k3f9:42"]);
    assert.equal(client.lastIds["user:alice"], "k3f9:42");
  });
});

describe("4. heartbeat and watchdog", () => {
  test("a ping every heartbeat_s after the welcome, none before", () => {
    const { client, WS, clock } = setup();
    client.connect();
    WS.last.open();
    clock.advance(20_000);
    WS.last.receive(WELCOME);
    clock.advance(24_999);
    assert.equal(WS.last.ops("ping").length, 0);
    WS.last.receive({ op: "pong" }); // keep the watchdog quiet; it is tested separately
    clock.advance(1);
    assert.equal(WS.last.ops("ping").length, 1);
    WS.last.receive({ op: "pong" });
    clock.advance(25_000);
    assert.equal(WS.last.ops("ping").length, 2);
    assert.deepEqual(WS.last.ops("ping")[0], { op: "ping" });
  });

  test("the period comes from the welcome", () => {
    const { client, WS, clock } = setup({ graceMs: 60_000 });
    client.connect();
    welcome(WS.last, { heartbeat_s: 10 });
    clock.advance(30_000);
    assert.equal(WS.instances.length, 1);
    assert.equal(WS.last.ops("ping").length, 3);
  });

  test("watchdog: silence for heartbeat*1000 + grace closes and reconnects — not a millisecond before", () => {
    const { client, WS, clock, of } = setup();
    client.connect();
    welcome(WS.last);
    const ws = WS.last;
    clock.advance(WINDOW_MS - 1);
    assert.equal(ws.closedWith, null);
    assert.equal(client.status, "live");
    clock.advance(1);
    assert.equal(ws.closedWith.code, 4000);
    assert.equal(client.status, "reconnecting");
    assert.deepEqual(of("status"), ["connecting", "live", "reconnecting"]);
    clock.advance(250); // backoff: random 0.5 * 500
    assert.equal(WS.instances.length, 2);
  });

  test("watchdog: any message restarts the silence window", () => {
    const { client, WS, clock } = setup();
    client.connect();
    welcome(WS.last);
    clock.advance(30_000);
    WS.last.receive({ op: "pong" });
    clock.advance(WINDOW_MS - 1);
    assert.equal(WS.last.closedWith, null);
    clock.advance(1);
    assert.equal(WS.last.closedWith.code, 4000);
  });

  test("watchdog window honours graceMs and heartbeat_s", () => {
    const { client, WS, clock } = setup({ graceMs: 2000 });
    client.connect();
    welcome(WS.last, { heartbeat_s: 5 });
    clock.advance(6999);
    assert.equal(WS.last.closedWith, null);
    clock.advance(1);
    assert.equal(WS.last.closedWith.code, 4000);
  });

  test("watchdog also covers a handshake that never gets a welcome", () => {
    const { client, WS, clock } = setup();
    client.connect();
    clock.advance(WINDOW_MS - 1);
    assert.equal(WS.last.closedWith, null);
    clock.advance(1);
    assert.equal(WS.last.closedWith.code, 4000);
    assert.equal(client.status, "reconnecting");
  });

  test("a late close event of the dropped socket is ignored", () => {
    const { client, WS, clock } = setup();
    client.connect();
    welcome(WS.last);
    const dead = WS.last;
    clock.advance(WINDOW_MS);
    dead.onclose?.({ code: 4500, reason: "late" }); // handlers were detached
    assert.equal(client.status, "reconnecting");
  });
});

describe("5. backoff and close codes", () => {
  test("backoffDelay: full jitter bounds, doubling, capped at 20 s", () => {
    const high = () => 0.999;
    const delays = [0, 1, 2, 3, 4, 5, 6, 7, 12].map((attempt) => backoffDelay(attempt, { random: high }));
    assert.deepEqual(delays, [499.5, 999, 1998, 3996, 7992, 15984, 19980, 19980, 19980]);
    for (const attempt of [0, 3, 30]) assert.equal(backoffDelay(attempt, { random: () => 0 }), 0);
    assert.equal(backoffDelay(3, { minBackoffMs: 100, maxBackoffMs: 500, random: () => 1 }), 500);
  });

  test("in the client: each retry waits random() * min(max, min * 2**attempt)", () => {
    const { client, WS, clock } = setup({ random: () => 0.999, EventSource: undefined });
    client.connect();
    const expected = [499.5, 999, 1998, 3996, 7992, 15984, 19980, 19980];
    for (const [i, delay] of expected.entries()) {
      WS.last.drop(1006);
      clock.advance(delay - 0.5);
      assert.equal(WS.instances.length, i + 1, `retry ${i} not before ${delay} ms`);
      clock.advance(0.5);
      assert.equal(WS.instances.length, i + 2, `retry ${i} at ${delay} ms`);
    }
    assert.equal(client.status, "reconnecting", "no EventSource: never falls back");
  });

  test("the attempt count resets on a welcome", () => {
    const { client, WS, clock } = setup({ random: () => 0.999, EventSource: undefined });
    client.connect();
    for (let i = 0; i < 4; i++) failBeforeWelcome(WS, clock);
    welcome(WS.last);
    const count = WS.instances.length;
    WS.last.drop(1006);
    clock.advance(499.4);
    assert.equal(WS.instances.length, count);
    clock.advance(0.1);
    assert.equal(WS.instances.length, count + 1);
  });

  test("random() = 0 retries at once", () => {
    const { client, WS, clock } = setup({ random: () => 0 });
    client.connect();
    welcome(WS.last);
    WS.last.drop(1006);
    clock.advance(0);
    assert.equal(WS.instances.length, 2);
  });

  for (const code of [4500, 4501, 4503, 4504]) {
    test(`close ${code} → no reconnect, status closed, error with code and reason`, () => {
      const { client, WS, clock, of } = setup();
      client.connect();
      welcome(WS.last);
      WS.last.drop(code, "go away");
      assert.equal(client.status, "closed");
      assert.deepEqual(of("error"), [{ code, reason: "go away" }]);
      assert.deepEqual(client.closeEvent, { code, reason: "go away" });
      clock.advance(10 * 60_000);
      assert.equal(WS.instances.length, 1);
      assert.equal(clock.pending, 0, "no timer left behind");
    });
  }

  test("a 45xx close before the welcome is final too (no fallback either)", () => {
    const { client, WS, ES, clock } = setup();
    client.connect();
    WS.last.drop(4500, "unauthorized");
    clock.advance(60_000);
    assert.equal(client.status, "closed");
    assert.equal(WS.instances.length, 1);
    assert.equal(ES.instances.length, 0);
  });

  for (const code of [4001, 4008, 4012, 4013, 1000, 1001, 1006, 1011, 1012]) {
    test(`close ${code} → reconnect`, () => {
      const { client, WS, clock, of } = setup();
      client.connect();
      welcome(WS.last);
      WS.last.drop(code, "bye");
      assert.equal(client.status, "reconnecting");
      assert.deepEqual(of("error"), []);
      clock.advance(250);
      assert.equal(WS.instances.length, 2);
      welcome(WS.last);
      assert.equal(client.status, "live");
    });
  }
});

describe("6. resume after a reconnect", () => {
  test("resubscribes every stream with its last id; the overlap is dropped, the gap delivered once", () => {
    const { client, WS, clock, offsets } = setup();
    client.subscribe("job:7");
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "k3f9", 41));
    WS.last.receive(wsEvent("user:alice", "k3f9", 42));
    WS.last.receive(wsEvent("job:7", "e7", 5));
    WS.last.drop(4008, "too slow to keep up: reconnect and resume");
    clock.advance(250);
    welcome(WS.last);
    assert.deepEqual(WS.last.ops("subscribe"), [
      { op: "subscribe", stream: "broadcast" },
      { op: "subscribe", stream: "job:7", since: "e7:5" },
      { op: "subscribe", stream: "user:alice", since: "k3f9:42" },
    ]);
    // a server (or a second path) replaying a little too much: 41 and 42 again, then what was missed
    WS.last.receive({ op: "recovered", stream: "user:alice", recovered: true, position: "k3f9:44" });
    for (const offset of [41, 42, 43, 44]) WS.last.receive(wsEvent("user:alice", "k3f9", offset));
    WS.last.receive(wsEvent("job:7", "e7", 5));
    WS.last.receive(wsEvent("job:7", "e7", 6));
    assert.deepEqual(offsets(), [
      "user:alice@k3f9:41",
      "user:alice@k3f9:42",
      "job:7@e7:5",
      "user:alice@k3f9:43",
      "user:alice@k3f9:44",
      "job:7@e7:6",
    ]);
    assert.deepEqual(client.lastIds, { "user:alice": "k3f9:44", "job:7": "e7:6" });
  });

  test("resume across several failed attempts keeps the last ids", () => {
    const { client, WS, clock } = setup({ EventSource: undefined });
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "k3f9", 9));
    WS.last.drop(1006);
    for (let i = 0; i < 5; i++) failBeforeWelcome(WS, clock);
    welcome(WS.last);
    assert.equal(sinceOf(WS.last, "user:alice"), "k3f9:9");
  });
});

describe("7. SSE fallback", () => {
  test("3 consecutive failures before a welcome → fallback to EventSource; WebSocket is not tried again", () => {
    const { client, WS, ES, clock, of } = setup({ token: "tok" });
    client.connect();
    failBeforeWelcome(WS, clock);
    failBeforeWelcome(WS, clock);
    assert.equal(ES.instances.length, 0);
    assert.equal(client.status, "reconnecting");
    WS.last.drop(1006);
    assert.equal(client.status, "fallback");
    assert.equal(ES.instances.length, 1);
    assert.deepEqual(ES.last.params, { streams: "broadcast", token: "tok" });
    clock.advance(10 * 60_000);
    assert.equal(WS.instances.length, 3);
    assert.deepEqual(of("status"), ["connecting", "reconnecting", "fallback"]);
  });

  test("a connection that reached the welcome does not count; the next 3 pre-welcome failures do", () => {
    const { client, WS, ES, clock } = setup();
    client.subscribe("job:7");
    client.connect();
    failBeforeWelcome(WS, clock);
    failBeforeWelcome(WS, clock);
    welcome(WS.last); // resets the count
    WS.last.receive(wsEvent("user:alice", "k3f9", 42));
    WS.last.receive(wsEvent("job:7", "e7", 5));
    failBeforeWelcome(WS, clock);
    failBeforeWelcome(WS, clock);
    failBeforeWelcome(WS, clock);
    assert.equal(ES.instances.length, 0);
    WS.last.drop(1006);
    assert.equal(client.status, "fallback");
    assert.deepEqual(ES.last.params, {
      streams: "broadcast,job:7,user:alice",
      last_event_id: "job:7=e7:5,user:alice=k3f9:42",
    });
    assert.ok(ES.last.url.includes(`last_event_id=${encodeURIComponent("job:7=e7:5,user:alice=k3f9:42")}`));
  });

  test("watchdog timeouts and throwing constructors count as failures", () => {
    const { client, WS, ES, clock } = setup();
    client.connect();
    clock.advance(WINDOW_MS); // 1: a handshake that hangs, closed by the watchdog
    assert.equal(WS.instances[0].closedWith.code, 4000);
    clock.advance(20_000);
    assert.equal(WS.instances.length, 2);
    WS.throwOnCreate = true;
    WS.last.drop(1006); // 2
    assert.equal(client.status, "reconnecting");
    clock.advance(20_000); // 3: the constructor throws
    assert.equal(client.status, "fallback");
    assert.equal(WS.instances.length, 2);
    assert.equal(ES.instances.length, 1);
  });

  test("no WebSocket at all → straight to SSE", () => {
    const { client, ES, of } = setup({ WebSocket: undefined });
    client.connect();
    assert.equal(client.status, "fallback");
    assert.equal(ES.instances.length, 1);
    assert.deepEqual(of("status"), ["connecting", "fallback"]);
  });

  test("neither WebSocket nor EventSource → closed with an error", () => {
    const { client, of } = setup({ WebSocket: undefined, EventSource: undefined });
    client.connect();
    assert.equal(client.status, "closed");
    assert.equal(of("error")[0].code, "unsupported");
  });

  /** A client on SSE that knows alice already (it was live before WebSocket broke). */
  function onSse(options) {
    const ctx = setup(options);
    const { client, WS, clock } = ctx;
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "k3f9", 42));
    failBeforeWelcome(WS, clock);
    for (let i = 0; i < 3; i++) failBeforeWelcome(WS, clock);
    assert.equal(client.status, "fallback");
    return { ...ctx, es: ctx.ES.last };
  }

  test("SSE messages: parsed, dispatched, deduped; lastEventId stored as-is and parsed into lastIds", () => {
    const { client, es, offsets } = onSse();
    assert.deepEqual(es.params, { streams: "broadcast,user:alice", last_event_id: "user:alice=k3f9:42" });
    es.open();
    es.message(event("user:alice", "k3f9", 42), "user:alice=k3f9:42,broadcast=ab12:0"); // overlap: dropped
    es.message(event("user:alice", "k3f9", 43), "user:alice=k3f9:43,broadcast=ab12:0");
    es.message(event("broadcast", "ab12", 1, "notice"), "user:alice=k3f9:43,broadcast=ab12:1");
    assert.deepEqual(offsets(), ["user:alice@k3f9:42", "user:alice@k3f9:43", "broadcast@ab12:1"]);
    assert.equal(client.lastEventId, "user:alice=k3f9:43,broadcast=ab12:1");
    assert.deepEqual(client.lastIds, { "user:alice": "k3f9:43", broadcast: "ab12:1" });
  });

  test("SSE: positions from the composite alone also count (e.g. a stream with no event yet)", () => {
    const { client, es } = onSse();
    es.message(event("user:alice", "k3f9", 43), "user:alice=k3f9:43,broadcast=ab12:7,job:99=x:1");
    assert.deepEqual(client.lastIds, { "user:alice": "k3f9:43", broadcast: "ab12:7" }, "unfollowed streams ignored");
  });

  test("SSE named events welcome, snapshot, recovered are passed on", () => {
    const { client, es, of } = onSse();
    es.named("welcome", WELCOME);
    es.named("snapshot", { op: "snapshot", jobs: [{ id: 1 }] });
    es.named("recovered", { op: "recovered", stream: "broadcast", recovered: false, position: "ab12:9" });
    assert.equal(of("welcome").length, 2); // the WebSocket one, then the SSE one
    assert.deepEqual(of("snapshot"), [{ jobs: [{ id: 1 }] }]);
    assert.deepEqual(of("recovered"), [{ stream: "broadcast", recovered: false, position: "ab12:9" }]);
    assert.equal(client.lastIds.broadcast, "ab12:9");
    assert.equal(client.status, "fallback");
  });

  test("SSE before any welcome: opens with the known streams, reopens once the welcome names the user", () => {
    const { client, WS, ES, clock } = setup();
    client.subscribe("job:7");
    client.connect();
    for (let i = 0; i < 3; i++) failBeforeWelcome(WS, clock);
    const first = ES.last;
    assert.equal(first.params.streams, "broadcast,job:7");
    first.message(event("job:7", "e7", 3), "job:7=e7:3");
    first.named("welcome", WELCOME);
    assert.equal(first.closed, true);
    assert.equal(ES.instances.length, 2);
    assert.deepEqual(ES.last.params, { streams: "broadcast,job:7,user:alice", last_event_id: "job:7=e7:3" });
    ES.last.named("welcome", WELCOME); // same streams now: no third EventSource
    assert.equal(ES.instances.length, 2);
    assert.equal(client.user, "alice");
  });

  test("subscribe/unsubscribe on SSE reopen the EventSource with the new stream list, resuming", () => {
    const { client, ES, es } = onSse();
    es.message(event("user:alice", "k3f9", 43), "user:alice=k3f9:43");
    client.subscribe("job:9");
    assert.equal(es.closed, true);
    assert.deepEqual(ES.last.params, { streams: "broadcast,user:alice,job:9", last_event_id: "user:alice=k3f9:43" });
    client.unsubscribe("broadcast");
    assert.deepEqual(ES.last.params, { streams: "user:alice,job:9", last_event_id: "user:alice=k3f9:43" });
    assert.equal(ES.instances.length, 3);
  });

  test("events from a replaced EventSource are ignored", () => {
    const { client, es, offsets } = onSse();
    client.subscribe("job:9");
    es.message(event("user:alice", "k3f9", 50), "user:alice=k3f9:50");
    assert.deepEqual(offsets(), ["user:alice@k3f9:42"]);
  });

  test("SSE error while EventSource retries by itself → nothing; after it gave up → reopen after backoff", () => {
    const { client, ES, es, clock } = onSse();
    es.message(event("user:alice", "k3f9", 43), "user:alice=k3f9:43");
    es.fail(0);
    assert.equal(es.closed, false);
    assert.equal(ES.instances.length, 1);
    es.fail(2);
    assert.equal(ES.instances.length, 1);
    clock.advance(250);
    assert.equal(ES.instances.length, 2);
    assert.equal(ES.last.params.last_event_id, "user:alice=k3f9:43");
    assert.equal(client.status, "fallback");
  });

  test("a server `error` event with data is reported as an error, not a connection failure", () => {
    const { ES, es, of } = onSse();
    es.dispatch("error", { data: JSON.stringify({ op: "error", code: "forbidden", reason: "no", stream: "job:3" }) });
    assert.deepEqual(of("error"), [{ code: "forbidden", reason: "no", stream: "job:3" }]);
    assert.equal(ES.instances.length, 1);
  });

  test("no ping and no watchdog on SSE (heartbeats are invisible comments)", () => {
    const { es, ES, WS, clock } = onSse();
    clock.advance(30 * 60_000);
    assert.equal(es.closed, false);
    assert.equal(ES.instances.length, 1);
    assert.equal(clock.pending, 0);
    assert.equal(WS.instances.length, 4);
  });
});

describe("last_event_id helpers", () => {
  test("composeLastEventId joins stream=epoch:offset with commas, skipping unknown positions", () => {
    const lastIds = { "user:alice": "k3f9:42", "job:7": "e7:5" };
    assert.equal(composeLastEventId(lastIds), "user:alice=k3f9:42,job:7=e7:5");
    assert.equal(composeLastEventId(lastIds, ["job:7", "broadcast"]), "job:7=e7:5");
    assert.equal(composeLastEventId({}), "");
  });

  test("parseLastEventId is its inverse and skips malformed pairs", () => {
    const lastIds = { "user:a.b+c": "k3f9:42", broadcast: "ab12:0", "job:7": "e7:5" };
    assert.deepEqual(parseLastEventId(composeLastEventId(lastIds)), lastIds);
    assert.deepEqual(parseLastEventId("x=,=a:1,job:1=e:notanumber,job:2=e:3,junk"), { "job:2": "e:3" });
    assert.deepEqual(parseLastEventId(undefined), {});
  });

  test("parsePosition splits at the last colon, like the server", () => {
    assert.deepEqual(parsePosition("k3f9:42"), { epoch: "k3f9", offset: 42 });
    assert.deepEqual(parsePosition("a:b:7"), { epoch: "a:b", offset: 7 });
    for (const bad of ["", ":1", "k3f9:", "k3f9", "k3f9:-1", null]) assert.equal(parsePosition(bad), null);
  });

  test("isTerminalClose: 4500–4999 only", () => {
    assert.deepEqual(
      [1000, 1006, 4000, 4499, 4500, 4999, 5000].map(isTerminalClose),
      [false, false, false, false, true, true, false],
    );
  });
});

describe("8. status", () => {
  test("every change is emitted once, in order", () => {
    const { client, WS, clock, of } = setup();
    client.connect();
    welcome(WS.last);
    WS.last.drop(1006);
    clock.advance(250);
    failBeforeWelcome(WS, clock); // stays "reconnecting": no repeated emission
    welcome(WS.last);
    client.close();
    assert.deepEqual(of("status"), ["connecting", "live", "reconnecting", "live", "closed"]);
  });
});

describe("8b. the browser's online and offline events", () => {
  test("offline: reconnecting at once, not a heartbeat window later; online: a new socket at once", () => {
    const network = new EventTarget();
    const { client, WS, clock, of } = setup({ network });
    client.connect();
    welcome(WS.last);
    const dead = WS.last;
    network.dispatchEvent(new Event("offline"));
    assert.equal(client.status, "reconnecting");
    assert.equal(dead.closedWith.code, 4000);
    clock.advance(250);
    failBeforeWelcome(WS, clock); // attempts fail while offline, and the backoff grows
    WS.last.drop(1006);
    const before = WS.instances.length;
    network.dispatchEvent(new Event("online"));
    assert.equal(WS.instances.length, before + 1); // no wait for the backoff
    welcome(WS.last);
    assert.deepEqual(of("status"), ["connecting", "live", "reconnecting", "live"]);
  });

  test("offline on SSE: reconnecting, then the EventSource again when back", () => {
    const network = new EventTarget();
    const { client, ES, of } = setup({ network, WebSocket: undefined });
    client.connect();
    ES.last.open();
    network.dispatchEvent(new Event("offline"));
    assert.equal(client.status, "reconnecting");
    assert.equal(ES.last.readyState, 2);
    network.dispatchEvent(new Event("online"));
    assert.equal(ES.instances.length, 2);
    ES.last.open();
    assert.deepEqual(of("status"), ["connecting", "fallback", "reconnecting", "fallback"]);
  });

  test("close() stops listening to the network", () => {
    const network = new EventTarget();
    const { client, WS } = setup({ network });
    client.connect();
    client.close();
    network.dispatchEvent(new Event("online"));
    network.dispatchEvent(new Event("offline"));
    assert.equal(WS.instances.length, 1);
    assert.equal(client.status, "closed");
  });
});

describe("9. close()", () => {
  test("while live: socket closed with 1000, timers cleared, no reconnect", () => {
    const { client, WS, clock, of } = setup();
    client.connect();
    welcome(WS.last);
    client.close();
    assert.equal(client.status, "closed");
    assert.equal(WS.last.closedWith.code, 1000);
    assert.equal(clock.pending, 0);
    clock.advance(10 * 60_000);
    assert.equal(WS.instances.length, 1);
    assert.deepEqual(of("error"), []);
    client.close(); // idempotent
    assert.deepEqual(of("status"), ["connecting", "live", "closed"]);
  });

  test("during a backoff wait: the pending retry is cancelled", () => {
    const { client, WS, clock } = setup();
    client.connect();
    welcome(WS.last);
    WS.last.drop(1006);
    client.close();
    assert.equal(clock.pending, 0);
    clock.advance(60_000);
    assert.equal(WS.instances.length, 1);
  });

  test("on SSE: the EventSource is closed", () => {
    const { client, ES } = setup({ WebSocket: undefined });
    client.connect();
    client.close();
    assert.equal(ES.last.closed, true);
    assert.equal(client.status, "closed");
  });

  test("subscribe() after close() only records the stream; connect() again resumes", () => {
    const { client, WS } = setup();
    client.connect();
    welcome(WS.last);
    WS.last.receive(wsEvent("user:alice", "k3f9", 7));
    client.close();
    client.subscribe("job:2");
    assert.equal(WS.instances.length, 1);
    client.connect();
    welcome(WS.last);
    assert.deepEqual(WS.last.ops("subscribe"), [
      { op: "subscribe", stream: "broadcast" },
      { op: "subscribe", stream: "user:alice", since: "k3f9:7" },
      { op: "subscribe", stream: "job:2" },
    ]);
  });

  test("connect() twice does not open a second socket", () => {
    const { client, WS } = setup();
    client.connect();
    client.connect();
    assert.equal(WS.instances.length, 1);
  });
});

describe("7b. SSE fallback only when the server answers HTTP", () => {
  const flush = () => new Promise((resolve) => setImmediate(resolve));

  test("a server that is down (restart) does not count toward the fallback", async () => {
    const probes = [];
    const { client, clock, WS } = setup({
      fetch: (url) => {
        probes.push(url);
        return Promise.reject(new TypeError("connection refused"));
      },
    });
    client.connect();
    for (let i = 0; i < 6; i += 1) {
      WS.last.drop(1006);
      await flush();
      clock.advance(30_000);
    }
    assert.equal(probes[0], "/nbrelay/api/health");
    assert.equal(client.status, "reconnecting");
    assert.ok(WS.instances.length >= 7, "WebSocket keeps being retried");
    assert.ok(WS.instances.every((ws) => ws.url === "ws://page.test/nbrelay/ws"), "every retry uses the real URL");
    welcome(WS.last);
    assert.equal(client.status, "live");
  });

  test("a server that answers HTTP but not WebSocket → fallback after 3 failures", async () => {
    const { client, clock, WS } = setup({ fetch: () => Promise.resolve({ ok: true, status: 200 }) });
    client.connect();
    for (let i = 0; i < 3; i += 1) {
      WS.last.drop(1006);
      await flush();
      clock.advance(30_000);
    }
    assert.equal(client.status, "fallback");
  });

  test("close() while a probe is under way schedules nothing", async () => {
    let answer;
    const { client, clock, WS } = setup({ fetch: () => new Promise((resolve) => (answer = resolve)) });
    client.connect();
    WS.last.drop(1006);
    await flush(); // the probe is now waiting for its answer
    client.close();
    answer({ ok: true });
    await flush();
    clock.advance(60_000);
    assert.equal(client.status, "closed");
    assert.equal(WS.instances.length, 1);
  });
});
