// The page's cell numbering: 1-based as people count and as the report shows it (In [n]), and "starting the
// kernel" instead of 0/0 while the kernel starts. Run: node --test tests/js/

import assert from "node:assert/strict";
import { test } from "node:test";

import { describeError, progressLabel, runningText } from "../../src/nbrelay/web/app/dom.js";

test("an error names the failing cell by its number, not by the reason's text", () => {
  const error = { reason: "cell 3 raised ZeroDivisionError", cell: 3, ename: "ZeroDivisionError", evalue: "division by zero" };
  assert.equal(describeError(error), "ZeroDivisionError: division by zero (cell 3)");
  assert.equal(describeError({ ...error, cell: null }), "ZeroDivisionError: division by zero");
});

test("errors without a raising cell keep the server's reason", () => {
  const timedOut = { reason: "cell 5 exceeded the cell timeout of 1 s", cell: 5, ename: "KeyboardInterrupt" };
  assert.equal(describeError(timedOut), "cell 5 exceeded the cell timeout of 1 s");
  assert.equal(describeError({ reason: "kernel died (signal 9 SIGKILL)", cell: 2 }), "kernel died (signal 9 SIGKILL)");
  assert.equal(describeError(null), "");
});

test("while the kernel starts the page says so, then counts cells from 1", () => {
  assert.equal(runningText({ cell: 0, total: 0, phase: "starting_kernel" }), "Starting the kernel…");
  assert.equal(runningText({ cell: 0, total: 0 }), "Starting the kernel…"); // from a server without phase
  assert.equal(runningText({ cell: 0, total: 40, phase: "running_cells" }), "Cell 1 of 40");
  assert.equal(runningText({ cell: 6, total: 40, phase: "running_cells" }), "Cell 7 of 40");
  assert.equal(runningText({ cell: 40, total: 40, phase: "writing_report" }), "Writing the report…");
  assert.equal(runningText(undefined), "Starting the kernel…");
});

test("the progress bar's label", () => {
  assert.equal(progressLabel("running", { cell: 0, total: 0 }, 0), "starting the kernel");
  assert.equal(progressLabel("running", { cell: 6, total: 40 }, 6), "6 of 40 cells done");
  assert.equal(progressLabel("succeeded", { cell: 40, total: 40 }, 40), "40 of 40 cells done");
});
