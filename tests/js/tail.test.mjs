// A running job's output tail: drawn as a terminal would ("\r", colours), and filled after a reload from the job's
// stream history without a line twice.
// Run: node --test tests/js/

import assert from "node:assert/strict";
import { test } from "node:test";

import { fillOutputs, HISTORY_EVENTS, startingPoints } from "../../src/nbrelay/web/app/backfill.js";
import { JobStore } from "../../src/nbrelay/web/app/jobs.js";
import { OutputTail, Screen, TAIL_LINES } from "../../src/nbrelay/web/app/tail.js";
import { makeFakeEventSource } from "./fakes.mjs";

function screenOf(...writes) {
  const screen = new Screen();
  for (const text of writes) screen.write(text);
  return screen.lines;
}

test("a carriage return goes back to the line's start: a progress bar stays one line", () => {
  assert.deepEqual(screenOf("loading\n", " 10%|#   |\r", " 50%|##  |\r", "100%|####|\n", "done\n"), [
    "loading",
    "100%|####|",
    "done",
  ]);
});

test("what follows a carriage return overwrites the line's start only, as on a terminal", () => {
  assert.deepEqual(screenOf("abcdef\rXY"), ["XYcdef"]);
});

test("CR LF ends the line and keeps it", () => {
  assert.deepEqual(screenOf("one\r\ntwo\r", "\nthree"), ["one", "two", "three"]);
});

test("colour sequences do not print, also when an event ends in the middle of one", () => {
  assert.deepEqual(screenOf("\x1b[31mred\x1b[0m \x1b[1;3", "2mgreen\x1b[0m\n", "\x1b", "[Kplain"), [
    "red green",
    "plain",
  ]);
});

function runsOf(...writes) {
  const screen = new Screen();
  for (const text of writes) screen.write(text);
  return screen.rows.map((row) => row.runs.map(({ text, className }) => [text, className]));
}

test("text keeps the colours and emphasis it was printed with, also across a sequence cut between events", () => {
  assert.deepEqual(runsOf("\x1b[31mred\x1b[0m \x1b[1;3", "2mgreen\x1b[22m thin\x1b[39;44m on blue\x1b[m.\n"), [
    [
      ["red", "ansi-fg-1"],
      [" ", ""],
      ["green", "ansi-fg-2 ansi-bold"],
      [" thin", "ansi-fg-2"],
      [" on blue", "ansi-bg-4"],
      [".", ""],
    ],
  ]);
});

test("a colour lasts across lines and events until it is reset, as on a terminal", () => {
  assert.deepEqual(runsOf("\x1b[3;4;93mwarn\n", "still\x1b[0m\n"), [
    [["warn", "ansi-fg-11 ansi-italic ansi-underline"]],
    [["still", "ansi-fg-11 ansi-italic ansi-underline"]],
  ]);
});

test("256 colours and 24-bit colours are drawn as the nearest of the 16", () => {
  assert.deepEqual(runsOf("\x1b[38;5;196mA\x1b[38;5;2mB\x1b[48;2;0;0;250mC\x1b[38:5:244mD\x1b[0m\n"), [
    [
      ["A", "ansi-fg-9"],
      ["B", "ansi-fg-2"],
      ["C", "ansi-fg-2 ansi-bg-4"],
      ["D", "ansi-fg-8 ansi-bg-4"],
    ],
  ]);
});

test("an overwrite after a carriage return takes the new colour for the characters it covers only", () => {
  assert.deepEqual(runsOf("\x1b[31mabcdef\r\x1b[32mXY\n"), [
    [
      ["XY", "ansi-fg-2"],
      ["cdef", "ansi-fg-1"],
    ],
  ]);
});

test("a colour form that cannot be read changes nothing, and other sequences than SGR colour nothing", () => {
  assert.deepEqual(runsOf("\x1b[38;9;1mx\x1b[38;5;999my\x1b[2Kz\x1b[?25mw\n"), [[["xyzw", ""]]]);
});

test("markup is text: nothing in the output is read as anything else", () => {
  assert.deepEqual(screenOf("<img src=x onerror=alert(1)>\n"), ["<img src=x onerror=alert(1)>"]);
});

test("the last lines are kept, without empty ones at the end", () => {
  const printed = Array.from({ length: 20 }, (_, i) => `tick ${i}\n`).join("");
  const lines = screenOf(printed, "\n\n");
  assert.equal(lines.length, TAIL_LINES);
  assert.equal(lines.at(-1), "tick 19");
});

// --- filling the tail from the history -------------------------------------------------------------------------

const output = (i, text = `tick ${i}\n`) => ({
  type: "job.output",
  ts: new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString(),
  data: { job: 7, cell: 2, name: "stdout", text },
});

test("the history goes before what came live, and what both brought shows once", () => {
  const tail = new OutputTail();
  tail.awaitHistory();
  tail.add(output(4)); // live before the history came; the history has it too
  tail.add(output(5));
  tail.fill([output(0), output(1), output(2), output(3), output(4), output(5), output(6)]);
  tail.add(output(6)); // published before the history was read, delivered live after it
  tail.add(output(7));
  assert.deepEqual(tail.lines, ["tick 0", "tick 1", "tick 2", "tick 3", "tick 4", "tick 5", "tick 6", "tick 7"]);
});

test("live output newer than the whole history follows it", () => {
  const tail = new OutputTail();
  tail.awaitHistory();
  tail.add(output(3));
  tail.fill([output(0), output(1)]);
  tail.add(output(4));
  assert.deepEqual(tail.lines, ["tick 0", "tick 1", "tick 3", "tick 4"]);
});

test("once a live event is newer than the history, equal text later is printed again", () => {
  const tail = new OutputTail();
  tail.awaitHistory();
  tail.fill([output(0, "same\n")]);
  tail.add(output(1, "same\n"));
  tail.add(output(0, "same\n")); // not an echo any more: the run of echoes ended
  assert.deepEqual(tail.lines, ["same", "same", "same"]);
});

test("a progress bar split between history and live output stays one line", () => {
  const tail = new OutputTail();
  tail.awaitHistory();
  tail.add(output(2, "\r 80%"));
  tail.fill([output(0, "bar\n"), output(1, " 40%")]);
  assert.deepEqual(tail.lines, ["bar", " 80%"]);
});

test("an empty history, or one that comes when nobody waits for it, changes nothing", () => {
  const tail = new OutputTail();
  tail.awaitHistory();
  tail.add(output(1));
  tail.fill([]);
  assert.deepEqual(tail.lines, ["tick 1"]);
  assert.equal(tail.awaitingHistory, false);
  tail.fill([output(0)]);
  assert.deepEqual(tail.lines, ["tick 1"]);
});

// --- reading the history back over SSE -------------------------------------------------------------------------

const settled = () => new Promise((resolve) => setImmediate(resolve)); // the fill's next step is a promise away

function streamEvent(stream, offset, type, data, ts = output(offset).ts) {
  return { stream, offset, epoch: "e7", id: `e7:${offset}`, type, ts, data: { job: 7, ...data } };
}

test("resume points are HISTORY_EVENTS before each stream's end; a stream without events is not read", () => {
  assert.deepEqual(startingPoints({ "job:7": "e7:100", "job:8": "e8:3", "job:9": "e9:0" }), {
    "job:7": `e7:${100 - HISTORY_EVENTS}`,
    "job:8": "e8:0",
  });
});

test("the tails of running jobs are filled from their streams, read up to where they stood", async () => {
  const EventSource = makeFakeEventSource();
  const store = new JobStore({ user: "alice" });
  store.merge({ id: 7, owner: "alice", notebook: "tick.ipynb", state: "running" });
  store.merge({ id: 8, owner: "alice", notebook: "quiet.ipynb", state: "running" });
  const ids = store.awaitOutputHistory();
  assert.deepEqual(ids, [7, 8]);
  const filling = fillOutputs(store, ids, { EventSource });

  const probe = EventSource.last;
  assert.equal(probe.params.streams, "job:7,job:8");
  probe.dispatch("welcome", { data: "{}", lastEventId: "job:7=e7:3,job:8=e8:0" });
  assert.equal(probe.closed, true);
  await settled();

  const replay = EventSource.last;
  assert.equal(replay.params.streams, "job:7");
  assert.equal(replay.params.last_event_id, "job:7=e7:0");
  replay.named("recovered", { op: "recovered", stream: "job:7", recovered: true, position: "e7:3" });
  replay.message(streamEvent("job:7", 1, "job.output", { text: "tick 0\n" }));
  replay.message(streamEvent("job:7", 2, "job.progress", { cell: 1, total: 2 }));
  store.apply(streamEvent("user:alice", 40, "job.output", { text: "tick 1\n" }, output(3).ts)); // live meanwhile
  replay.message(streamEvent("job:7", 3, "job.output", { text: "tick 1\n" }));
  assert.equal(replay.closed, true);
  await filling;

  assert.deepEqual(store.get(7).output.lines, ["tick 0", "tick 1"]);
  assert.equal(store.get(8).output.awaitingHistory, false);
});

test("a read cut off fills nothing, and live output stays", async () => {
  const EventSource = makeFakeEventSource();
  const store = new JobStore({ user: "alice" });
  store.merge({ id: 7, owner: "alice", notebook: "tick.ipynb", state: "running" });
  const filling = fillOutputs(store, store.awaitOutputHistory(), { EventSource });
  EventSource.last.dispatch("welcome", { data: "{}", lastEventId: "job:7=e7:3" });
  await settled();
  EventSource.last.named("recovered", { op: "recovered", stream: "job:7", recovered: true, position: "e7:3" });
  EventSource.last.message(streamEvent("job:7", 1, "job.output", { text: "tick 0\n" }));
  store.apply(streamEvent("user:alice", 40, "job.output", { text: "tick 5\n" }, output(5).ts));
  EventSource.last.fail(2);
  await filling;
  assert.deepEqual(store.get(7).output.lines, ["tick 5"]);
});
