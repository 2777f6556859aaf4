// The page's job store: answers and events arrive in any order, and a job's state and progress only move forward.
// Run: node --test tests/js/

import assert from "node:assert/strict";
import { test } from "node:test";

import { formatWhen, runningText } from "../../src/nbrelay/web/app/dom.js";
import { JobStore, mergedPhase } from "../../src/nbrelay/web/app/jobs.js";

const at = (seconds) => ({ ts: new Date(Date.UTC(2026, 0, 1, 0, 0, seconds)).toISOString() });

function event(type, data, seconds = 0) {
  return { type, data: { job: 7, notebook: "tour.ipynb", ...data }, ...at(seconds) };
}

function storeWithQueuedJob() {
  const store = new JobStore({ user: "alice" });
  store.merge({ id: 7, notebook: "tour.ipynb", state: "queued", progress: { cell: 0, total: 0, phase: null } });
  return store;
}

test("a REST answer read while the kernel started, applied after cells were counted, does not start it again", () => {
  const store = storeWithQueuedJob();
  store.apply(event("job.starting", { state: "running", phase: "starting_kernel" }, 1));
  store.apply(event("job.started", { state: "running", total: 8, phase: "running_cells" }, 2));
  store.apply(event("job.progress", { cell: 2, total: 8, phase: "running_cells" }, 3));
  // The answer to a GET sent before job.started, arriving now over its own connection.
  store.merge({ id: 7, state: "running", progress: { cell: 0, total: 0, phase: "starting_kernel" } });
  assert.deepEqual(store.get(7).progress, { cell: 2, total: 8, phase: "running_cells" });
  assert.equal(runningText(store.get(7).progress), "Cell 3 of 8");
});

test("job.started from a server that sends no phase still counts cells", () => {
  const store = storeWithQueuedJob();
  store.apply(event("job.starting", { state: "running", phase: "starting_kernel" }, 1));
  store.apply(event("job.started", { state: "running", total: 8 }, 2));
  assert.equal(runningText(store.get(7).progress), "Cell 1 of 8");
});

test("the phase moves forward while running and is none once the job ended", () => {
  assert.equal(mergedPhase("running", "starting_kernel", "running_cells"), "running_cells");
  assert.equal(mergedPhase("running", "writing_report", "running_cells"), "writing_report");
  assert.equal(mergedPhase("running", "running_cells", null), "running_cells");
  assert.equal(mergedPhase("running", null, "starting_kernel"), "starting_kernel");
  assert.equal(mergedPhase("succeeded", "writing_report", null), null);
});

test("a late queued answer does not take a running job back to the queue", () => {
  const store = storeWithQueuedJob();
  store.apply(event("job.started", { state: "running", total: 3, phase: "running_cells" }, 2));
  store.merge({ id: 7, state: "queued", progress: { cell: 0, total: 0, phase: null } });
  assert.equal(store.get(7).state, "running");
});

test("a late queued answer still brings what the job was submitted with", () => {
  const store = new JobStore({ user: "alice" });
  store.apply(event("job.queued", { state: "queued" }, 1)); // first known from an event: no parameters yet
  store.apply(event("job.succeeded", { state: "succeeded" }, 3));
  store.merge({ id: 7, state: "queued", parameters: { name: "Ada" }, created_at: "2026-01-01T00:00:01Z" });
  assert.equal(store.get(7).state, "succeeded");
  assert.deepEqual(store.get(7).parameters, { name: "Ada" });
  assert.equal(store.get(7).created_at, "2026-01-01T00:00:01Z");
});

test("every relative time reads now on the server's clock once an event told it", () => {
  // The browser's clock is an hour behind: an event stamped by the server "now" carries a time an hour ahead.
  const serverTime = new Date(Date.now() + 3600_000).toISOString();
  const store = new JobStore({ user: "alice" });
  store.apply({ type: "job.queued", data: { job: 8, notebook: "tour.ipynb" }, ts: serverTime });
  assert.equal(formatWhen(serverTime), "just now"); // the report viewer, history and file list call it so
});
