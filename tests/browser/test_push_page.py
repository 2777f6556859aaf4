"""End to end in a real browser: nbrelay.js in Chromium, against a real `nbrelay serve`.

The page (tests/browser/page.html) records everything the client tells it in `window.log`; the tests submit
jobs over REST and poll that log.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import httpx
from playwright.sync_api import Page

from tests.browser.conftest import ARTIFACTS, TIMEOUT_MS, page_log

TERMINAL = ("job.succeeded", "job.failed", "job.cancelled", "job.timed_out")

# Replaces WebSocket before any page script runs: every socket fails at once, like behind a proxy that breaks
# upgrades (error, then close 1006, asynchronously as browsers do).
BLOCK_WEBSOCKET = """
(() => {
  window.__blockedSockets = 0;
  class BlockedWebSocket {
    static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
    constructor(url) {
      this.url = String(url);
      this.readyState = 0;
      this.onopen = this.onmessage = this.onerror = this.onclose = null;
      window.__blockedSockets += 1;
      setTimeout(() => {
        this.readyState = 3;
        if (this.onerror) this.onerror(new Event("error"));
        if (this.onclose) this.onclose({ type: "close", code: 1006, reason: "", wasClean: false });
      }, 0);
    }
    send() { throw new DOMException("the socket is not open", "InvalidStateError"); }
    close() {}
  }
  window.WebSocket = BlockedWebSocket;
})();
"""


# --- helpers -------------------------------------------------------------------------------------------------


def wait_until(page: Page, condition: str, arg: Any = None, timeout_ms: int = TIMEOUT_MS, what: str = "") -> None:
    """Poll a JS predicate on the page; on timeout fail with what the page saw."""
    try:
        page.wait_for_function(condition, arg=arg, polling=100, timeout=timeout_ms)
    except Exception as exc:
        raise AssertionError(f"timed out waiting for {what or condition}\n{describe(page)}") from exc


def describe(page: Page) -> str:
    try:
        log = page_log(page)
        status = page.evaluate("() => window.client.status")
    except Exception as exc:
        return f"(page unreadable: {exc})"
    lines = [f"client status: {status}; page log ({len(log)} entries):"]
    for entry in log[-80:]:
        brief = {k: v for k, v in entry.items() if k not in ("ts", "epoch", "id")}
        lines.append("  " + json.dumps(brief, default=str)[:240])
    console = getattr(page, "console", [])
    if console:
        lines.append("console:")
        lines += [f"  {line}" for line in console[-20:]]
    return "\n".join(lines)


def events(page: Page, job: int | None = None) -> list[dict[str, Any]]:
    found = [e for e in page_log(page) if e["kind"] == "event"]
    return [e for e in found if job is None or (e.get("data") or {}).get("job") == job]


def statuses(page: Page) -> list[str]:
    return [e["status"] for e in page_log(page) if e["kind"] == "status"]


def assert_ordered_without_duplicates(received: list[dict[str, Any]]) -> None:
    """Per stream: one epoch at a time, offsets strictly rising (so no duplicate and nothing out of order)."""
    last: dict[str, tuple[str, int]] = {}
    for event in received:
        stream, epoch, offset = event["stream"], event["epoch"], event["offset"]
        if stream in last and last[stream][0] == epoch:
            assert offset > last[stream][1], f"{stream}: offset {offset} after {last[stream][1]} (duplicate/reorder)"
        last[stream] = (epoch, offset)


def assert_job_sequence(received: list[dict[str, Any]], job: int, final: str, *, need_started: bool = True) -> None:
    """started → progress rising to total → final, in that order, for one job on one stream."""
    types = [e["type"] for e in received]
    assert final in types, f"job {job}: no {final} in {types}"
    assert types.index(final) == len(types) - 1, f"job {job}: events after {final}: {types}"
    if need_started:
        assert "job.started" in types, f"job {job}: no job.started in {types}"
        started = types.index("job.started")
        assert all(t not in ("job.progress", *TERMINAL) for t in types[:started]), f"job {job}: {types}"
    progress = [e["data"] for e in received if e["type"] == "job.progress"]
    cells = [p["cell"] for p in progress]
    assert cells == sorted(cells), f"job {job}: progress goes backwards: {cells}"
    if final == "job.succeeded":
        assert progress, f"job {job}: no job.progress"
        assert cells[-1] == progress[-1]["total"] > 0, f"job {job}: progress stops at {cells[-1]}/{progress[-1]}"
        assert len(set(cells)) == len(cells), f"job {job}: a cell reported twice: {cells}"


def submit(server: Any, notebook: str, **parameters: Any) -> int:
    answer = httpx.post(f"{server.url}/api/jobs", json={"notebook": notebook, "parameters": parameters}, timeout=30)
    assert answer.status_code == 202, answer.text
    return int(answer.json()["id"])


def wait_live(page: Page) -> None:
    wait_until(page, "() => window.client.status === 'live'", what="the client to be live")
    # The client subscribes to its default streams right after the welcome; give the server a moment to
    # register them before anything is published (a subscribe without `since` only gets what follows it).
    page.wait_for_timeout(500)


# ([stream or null, job, [types]]) → true once the page got one of those events of that job (on that stream)
HAS_EVENT = (
    "([stream, job, types]) => window.log.some((e) => e.kind === 'event' && (stream === null || "
    "e.stream === stream) && e.data && e.data.job === job && types.includes(e.type))"
)


# --- tests ---------------------------------------------------------------------------------------------------


def test_page_watches_progress_live(server_factory: Any, open_page: Any) -> None:
    server = server_factory(workers=1)
    page = open_page(server)
    wait_live(page)

    job = submit(server, "many_cells.ipynb")
    page.evaluate("(stream) => window.client.subscribe(stream)", f"job:{job}")
    for stream in ("user:local", f"job:{job}"):
        wait_until(
            page,
            HAS_EVENT,
            [stream, job, ["job.succeeded"]],
            what=f"job.succeeded of job {job} on {stream}",
        )
    assert server.wait_for(job)["state"] == "succeeded"

    received = events(page, job)
    assert_ordered_without_duplicates(events(page))
    own = [e for e in received if e["stream"] == "user:local"]
    assert_job_sequence(own, job, "job.succeeded")
    # The owner's stream was followed before the submit: every event of the job is there, none lost.
    offsets = [e["offset"] for e in own]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"gap in user:local offsets: {offsets}"
    # job:<id> was subscribed just after the submit (live, without history): whatever it got is in order, and
    # it ends with the job.
    on_job_stream = [e for e in received if e["stream"] == f"job:{job}"]
    assert_job_sequence(on_job_stream, job, "job.succeeded", need_started=False)
    assert {e["status"] for e in received} == {"live"}
    assert statuses(page) == ["connecting", "live"], statuses(page)

    wait_until(
        page,
        "(job) => document.getElementById('line').textContent.startsWith(`job ${job}: cell`)",
        job,
        what="the progress line",
    )
    line = page.text_content("#line")
    total = [e for e in own if e["type"] == "job.progress"][-1]["data"]["total"]
    assert line == f"job {job}: cell {total}/{total} succeeded", line
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "progress.png"))


def test_page_gets_final_event_after_server_restart_mid_job(server_factory: Any, open_page: Any) -> None:
    server = server_factory(workers=1)
    page = open_page(server)
    wait_live(page)

    job = submit(server, "sleep.ipynb", seconds=30)
    page.evaluate("(stream) => window.client.subscribe(stream)", f"job:{job}")
    wait_until(
        page,
        HAS_EVENT,
        ["user:local", job, ["job.progress"]],
        what=f"job {job} started and progressing",
    )
    before = events(page)
    assert "job.started" in [e["type"] for e in before if e["data"].get("job") == job]
    positions_before = page.evaluate("() => ({...window.client.lastIds})")
    log_mark = len(page_log(page))

    stopped_at = time.monotonic()
    server.stop()
    restart_s = time.monotonic() - stopped_at
    server.start()
    assert server.wait_for(job)["error"]["reason"] == "interrupted: server stopped"

    # The final event must arrive as an event, resumed from the client's last position: not just as a
    # `recovered: false` telling the app to re-read REST.
    try:
        wait_until(
            page,
            HAS_EVENT,
            ["user:local", job, list(TERMINAL)],
            what=f"job {job}'s final event on user:local after the restart",
        )
    except AssertionError as exc:
        recovered = [e for e in page_log(page)[log_mark:] if e["kind"] == "recovered"]
        raise AssertionError(
            f"the final event of job {job} never arrived as an event after the restart (server down "
            f"{restart_s:.1f} s; positions before: {positions_before}; recovered messages: {recovered})\n{exc}"
        ) from None

    received = events(page, job)
    assert_ordered_without_duplicates(events(page))
    own = [e for e in received if e["stream"] == "user:local"]
    assert_job_sequence(own, job, "job.failed")
    final = own[-1]
    assert final["data"]["error"]["reason"] == "interrupted: server stopped", final
    resumed_from = positions_before["user:local"]
    assert final["epoch"] == resumed_from.rsplit(":", 1)[0], "the stream's history restarted: nothing was resumed"
    lost = [e for e in page_log(page)[log_mark:] if e["kind"] == "recovered" and not e["recovered"]]
    assert not lost, f"history lost across the restart: {lost}"
    terminal_events = [e for e in received if e["type"] in TERMINAL]
    per_stream = defaultdict(list)
    for e in terminal_events:
        per_stream[e["stream"]].append(e["offset"])
    assert all(len(v) == 1 for v in per_stream.values()), f"final event delivered twice: {dict(per_stream)}"

    # And it did so on its own WebSocket again: a server restart is no reason to give up WebSocket for SSE.
    wait_until(
        page,
        "() => ['live', 'fallback', 'closed'].includes(window.client.status)",
        what="the client to settle after the restart",
    )
    changes = [e["status"] for e in page_log(page)[log_mark:] if e["kind"] == "status"]
    assert changes[0] == "reconnecting" and changes[-1] == "live", f"status after the restart: {changes}"
    assert "fallback" not in changes, f"a server restart sent the client to the SSE fallback: {changes}"


def test_page_falls_back_to_sse_when_websocket_is_blocked(server_factory: Any, open_page: Any) -> None:
    server = server_factory(workers=1)
    page = open_page(server, init_script=BLOCK_WEBSOCKET)
    wait_until(page, "() => window.client.status === 'fallback'", what="the SSE fallback")
    attempts = page.evaluate("() => window.__blockedSockets")
    assert attempts == 3, f"{attempts} WebSocket attempts before falling back"
    # Once the welcome names the user, the client re-opens its EventSource with user:local added; wait for
    # that one's welcome, so the stream is followed before the job is submitted.
    wait_until(
        page,
        "() => window.log.some((e) => e.kind === 'welcome' && (e.esStreams || '').split(',').includes('user:local'))",
        what="an EventSource following user:local",
    )

    job = submit(server, "tiny.ipynb")
    wait_until(
        page,
        HAS_EVENT,
        ["user:local", job, ["job.succeeded"]],
        what=f"job.succeeded of job {job} over SSE",
    )
    assert server.wait_for(job)["state"] == "succeeded"
    received = [e for e in events(page, job) if e["stream"] == "user:local"]
    assert_ordered_without_duplicates(events(page))
    assert_job_sequence(received, job, "job.succeeded")
    assert {e["status"] for e in received} == {"fallback"}
    assert statuses(page) == ["connecting", "reconnecting", "fallback"], statuses(page)
    assert page.evaluate("() => window.client.lastIds['user:local']") == received[-1]["id"]
