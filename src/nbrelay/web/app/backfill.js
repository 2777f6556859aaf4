// What running jobs printed before the page connected (a reload mid-run): read back from each job's own stream
// job:<id>, whose recent events the server keeps (docs/protocol.md, "Resume"). Over SSE, beside the page's push
// connection and without touching it: one request learns where the streams stand (its welcome's id holds each
// one's position), a second resumes them from a little before that, and both end once read. Two requests for up
// to STREAMS_PER_REQUEST jobs, however many there are and whatever they print.

import { composeLastEventId, parseLastEventId, parsePosition } from "../nbrelay.js";

const STREAMS_PER_REQUEST = 64; // the server's limit of streams per connection
// Events read back per job: output and progress events alternate, and the tail shows TAIL_LINES lines, so a few
// times that is enough for jobs that print a line at a time; a job that prints more fills its tail live soon.
export const HISTORY_EVENTS = 64;

/** Fill the output tails of the jobs `ids` (running, awaiting their history) from their streams' history. */
export async function fillOutputs(store, ids, { EventSource = globalThis.EventSource } = {}) {
  for (let i = 0; i < ids.length; i += STREAMS_PER_REQUEST) {
    const batch = ids.slice(i, i + STREAMS_PER_REQUEST);
    const streams = batch.map((id) => `job:${id}`);
    const positions = await whereStreamsStand(streams, EventSource);
    const history = await readBack(startingPoints(positions), EventSource);
    for (const id of batch) store.fillOutput(id, history.get(`job:${id}`) ?? []);
  }
}

/** stream → "epoch:offset" it stands at; none for a stream the server could not tell. */
function whereStreamsStand(streams, EventSource) {
  return new Promise((resolve) => {
    const source = new EventSource(`sse?streams=${streams.join(",")}`);
    const end = (positions) => {
      source.close();
      resolve(positions);
    };
    source.addEventListener("welcome", (e) => end(parseLastEventId(e.lastEventId)));
    source.addEventListener("error", () => end({})); // refused (at its connection limit, say): nothing to fill
  });
}

/** stream → the position to resume from: HISTORY_EVENTS before its last event (none for a stream without one). */
export function startingPoints(positions) {
  const since = {};
  for (const [stream, id] of Object.entries(positions)) {
    const at = parsePosition(id);
    if (at?.offset > 0) since[stream] = `${at.epoch}:${Math.max(0, at.offset - HISTORY_EVENTS)}`;
  }
  return since;
}

/** stream → its job.output events after `since[stream]`, up to where the stream stood when they were read. */
function readBack(since, EventSource) {
  const streams = Object.keys(since);
  const read = new Map(streams.map((stream) => [stream, []]));
  if (!streams.length) return Promise.resolve(read);
  return new Promise((resolve) => {
    const lastEventId = encodeURIComponent(composeLastEventId(since));
    const source = new EventSource(`sse?streams=${streams.join(",")}&last_event_id=${lastEventId}`);
    const upTo = new Map(); // stream → the offset of its last event in the history being sent
    const finish = (stream) => {
      upTo.delete(stream);
      streams.splice(streams.indexOf(stream), 1);
      if (streams.length) return;
      source.close();
      resolve(read);
    };
    source.addEventListener("recovered", (e) => {
      const { stream, recovered, position } = JSON.parse(e.data);
      if (!streams.includes(stream)) return;
      const last = parsePosition(position)?.offset;
      // Not recovered: gone from the history (expired, or the server lost it), so there is nothing to add.
      if (!recovered || !(last > parsePosition(since[stream]).offset)) finish(stream);
      else upTo.set(stream, last);
    });
    source.addEventListener("message", (e) => {
      const event = JSON.parse(e.data);
      const last = upTo.get(event.stream);
      if (last === undefined || event.offset > last) return; // live events: the page's connection has them
      if (event.type === "job.output") read.get(event.stream).push(event);
      if (event.offset === last) finish(event.stream);
    });
    source.addEventListener("error", () => {
      source.close(); // cut off: what was read may miss its end, so none of it is used
      for (const stream of streams) read.set(stream, []);
      resolve(read);
    });
  });
}
