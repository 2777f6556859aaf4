// Jobs: what the page knows of them (JobStore, fed by REST answers and push events alike) and the live jobs
// panel (queued with their place in the queue, running with progress, output and ETA, finished).

import { api, urls } from "./api.js";
import { noteServerTime, serverNow } from "./clock.js";
import {
  baseName,
  describeError,
  fill,
  formatDuration,
  formatFullTime,
  formatParameters,
  formatWhen,
  h,
  icon,
  progressLabel,
  runningText,
  STATE_LABELS,
} from "./dom.js";
import { OutputTail } from "./tail.js";

export const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out"]);
const TERMINAL_EVENTS = new Set(["job.succeeded", "job.failed", "job.cancelled", "job.timed_out"]);
const RECENT_LIMIT = 30;

// A job only moves forward: queued → running → finished. Answers and events can arrive in any order (a REST
// answer read before an event, a resume replaying what a snapshot already said), so an older state never
// overwrites a newer one, and progress never goes back.
function rank(state) {
  return state === "queued" ? 0 : state === "running" ? 1 : 2;
}

// What a job is given when it is submitted and keeps for good.
const FIXED_FIELDS = ["owner", "notebook", "parameters", "kernel_name", "created_at", "schedule_id", "steps"];

// A running job's phase moves forward too: a REST answer read while its kernel started must not say "Starting
// the kernel…" again once an event has counted its cells.
const PHASES = ["starting_kernel", "running_cells", "writing_report"];

/** The phase of `known` progress merged with `incoming`: the later of the two (null when not running). */
export function mergedPhase(state, before, after) {
  if (state !== "running") return null;
  return PHASES.indexOf(after) >= PHASES.indexOf(before) ? after : before;
}

export class JobStore {
  constructor({ user }) {
    this.user = user;
    this.jobs = new Map();
    this.lastRuns = new Map(); // notebook → {duration_s: number | null, loaded: boolean}
    this._changeListeners = new Set();
    this._finishListeners = new Set();
    this._notified = new Set();
    this._fetching = new Set();
    this._positionsTimer = null;
    this.olderOnServer = false; // finished jobs older than those read exist (for the panel's "Show more")
  }

  onChange(fn) {
    this._changeListeners.add(fn);
  }

  /** fn(job) once per job of this user that finishes while the page is open (from an event or a REST answer). */
  onFinished(fn) {
    this._finishListeners.add(fn);
  }

  get(id) {
    return this.jobs.get(Number(id));
  }

  elapsedS(job) {
    if (TERMINAL.has(job.state)) return job.duration_s ?? null;
    const started = Date.parse(job.started_at);
    return Number.isFinite(started) ? Math.max(0, (serverNow() - started) / 1000) : null;
  }

  // --- merging ------------------------------------------------------------------------------------------------

  merge(incoming) {
    const id = Number(incoming.id);
    const known = this.jobs.get(id);
    if (!known) {
      const job = { parameters: {}, progress: { cell: 0, total: 0 }, output: new OutputTail(), ...incoming, id };
      this.jobs.set(id, job);
      this._changed(job);
      return job;
    }
    if (rank(incoming.state ?? known.state) < rank(known.state)) {
      // Stale news (a REST answer read before the events we have): its state and progress are older than ours,
      // but what a job never changes is still news to a job first known from an event.
      for (const key of FIXED_FIELDS) if (incoming[key] !== undefined) known[key] = incoming[key];
      this._changed(known);
      return known;
    }
    const wasFinished = TERMINAL.has(known.state);
    const before = known.progress ?? { cell: 0, total: 0 };
    const after = incoming.progress ?? before;
    const state = incoming.state ?? known.state;
    Object.assign(known, incoming, {
      id,
      progress: {
        cell: Math.max(before.cell ?? 0, after.cell ?? 0),
        total: after.total || before.total || 0,
        phase: mergedPhase(state, before.phase ?? null, after.phase ?? null),
      },
    });
    if (!wasFinished && TERMINAL.has(known.state)) this._finished(known);
    this._changed(known);
    return known;
  }

  /** A push event (job.*): update the job, fetching it over REST when it is new to us. */
  apply(event) {
    const data = event.data ?? {};
    if (data.job == null) return;
    noteServerTime(event.ts); // so that every relative time on the page is read on the server's clock
    const id = Number(data.job);
    if (!this.jobs.has(id)) {
      this.jobs.set(id, {
        id,
        owner: data.owner,
        notebook: data.notebook ?? "",
        state: "queued",
        parameters: {},
        progress: { cell: 0, total: 0 },
        output: new OutputTail(),
        created_at: event.ts,
      });
      this.fetch(id);
    }
    const job = this.jobs.get(id);
    const base = { id, ...(data.notebook ? { notebook: data.notebook } : {}) };
    switch (event.type) {
      case "job.queued":
        this.merge({ ...base, state: "queued" });
        this.schedulePositions();
        break;
      case "job.starting": // it left the queue and its kernel is starting: no cell is counted yet
      case "job.started":
        this.merge({
          ...base,
          state: "running",
          started_at: job.started_at ?? event.ts,
          queue_position: null,
          progress: { cell: 0, total: data.total ?? 0, phase: data.phase ?? (data.total ? "running_cells" : null) },
        });
        this.schedulePositions();
        break;
      case "job.progress":
        this.merge({ ...base, state: "running", progress: { cell: data.cell, total: data.total, phase: data.phase } });
        break;
      case "job.output":
        job.output.add(event);
        this._changed(job);
        break;
      default:
        if (!TERMINAL_EVENTS.has(event.type)) return;
        this.merge({
          ...base,
          state: data.state,
          error: data.error ?? null,
          duration_s: data.duration_s ?? job.duration_s ?? null,
          finished_at: job.finished_at ?? event.ts,
          report_url: data.report_url ?? null,
          notebook_url: data.report_url ? urls.notebook(id) : null,
          step_results: data.steps ?? job.step_results ?? null,
          queue_position: null,
        });
        this.schedulePositions();
    }
  }

  /** The running jobs whose tails may miss what they printed while the page was not connected (before a reload,
   * say): their tails await it from now on (fillOutput). */
  awaitOutputHistory() {
    const ids = [];
    for (const job of this.jobs.values()) {
      if (job.state !== "running" || job.output.awaitingHistory) continue;
      job.output.awaitHistory();
      ids.push(job.id);
    }
    return ids;
  }

  /** The job's earlier job.output events, read back from its stream's history: drawn before the live ones. */
  fillOutput(id, history) {
    const job = this.get(id);
    if (!job) return;
    job.output.fill(history);
    this._changed(job);
  }

  /** The jobs that were queued or running at connect time (the server's snapshot). */
  applySnapshot(jobs) {
    const listed = new Set();
    for (const job of jobs ?? []) {
      listed.add(Number(job.id));
      this.merge(job);
    }
    // Jobs we thought unfinished that the snapshot does not list have finished meanwhile: read them again.
    for (const job of this.jobs.values()) {
      if (!TERMINAL.has(job.state) && !listed.has(job.id)) this.fetch(job.id);
    }
  }

  /** Read the recent jobs over REST (at start, and when the push history could not fill a gap). */
  async load() {
    const answer = await api.get("api/jobs", { limit: RECENT_LIMIT });
    this.olderOnServer = answer.total > answer.jobs.length;
    const listed = new Set();
    for (const job of answer.jobs) {
      listed.add(job.id);
      this.merge(job);
    }
    for (const job of this.jobs.values()) {
      if (!TERMINAL.has(job.state) && !listed.has(job.id)) this.fetch(job.id);
    }
    this.schedulePositions();
  }

  /** Read `limit` finished jobs, newest first, after the first `offset` of them. */
  async loadFinished(offset, limit) {
    const answer = await api.get("api/jobs", { state: [...TERMINAL].join(","), offset, limit });
    this.olderOnServer = offset + answer.jobs.length < answer.total;
    for (const job of answer.jobs) this.merge(job);
    return answer;
  }

  fetch(id) {
    if (this._fetching.has(id)) return;
    this._fetching.add(id);
    api
      .get(urls.job(id))
      .then((job) => this.merge(job))
      .catch(() => {})
      .finally(() => this._fetching.delete(id));
  }

  async cancel(id) {
    const job = await api.post(`${urls.job(id)}/cancel`);
    return this.merge(job);
  }

  /** Queue positions are global (other users' jobs count too), so they are read from the server. */
  schedulePositions() {
    clearTimeout(this._positionsTimer);
    this._positionsTimer = setTimeout(() => {
      if (![...this.jobs.values()].some((job) => job.state === "queued")) return;
      api
        .get("api/jobs", { state: "queued", limit: 500 })
        .then((answer) => answer.jobs.forEach((job) => this.merge(job)))
        .catch(() => {});
    }, 200);
  }

  /** {duration_s, loaded} of the notebook's last successful run (read once per notebook, then kept current). */
  lastRun(notebook) {
    if (!this.lastRuns.has(notebook)) {
      this.lastRuns.set(notebook, { duration_s: null, loaded: false });
      api
        .get("api/jobs", { notebook, state: "succeeded", limit: 1 })
        .then((answer) => {
          const entry = this.lastRuns.get(notebook);
          if (!entry.loaded)
            this.lastRuns.set(notebook, { duration_s: answer.jobs[0]?.duration_s ?? null, loaded: true });
          for (const job of this.jobs.values()) if (job.notebook === notebook) this._changed(job);
        })
        .catch(() => this.lastRuns.delete(notebook));
    }
    return this.lastRuns.get(notebook);
  }

  // --- internals ----------------------------------------------------------------------------------------------

  _finished(job) {
    if (job.state === "succeeded" && job.duration_s != null) {
      this.lastRuns.set(job.notebook, { duration_s: job.duration_s, loaded: true });
    }
    if (this._notified.has(job.id) || (this.user && job.owner && job.owner !== this.user)) return;
    this._notified.add(job.id);
    for (const fn of this._finishListeners) fn(job);
  }

  _changed(job) {
    for (const fn of this._changeListeners) fn(job);
  }
}

// --- the panel ------------------------------------------------------------------------------------------------

const SECTIONS = [
  { key: "running", title: "Running" },
  { key: "queued", title: "Queued" },
  { key: "finished", title: "Recent" },
];

function sectionOf(job) {
  return TERMINAL.has(job.state) ? "finished" : job.state === "running" ? "running" : "queued";
}

class JobCard {
  constructor(job, panel) {
    this.panel = panel;
    this.id = job.id;
    this.badge = h("span", { class: "badge" });
    this.title = h("span", { class: "job-name" });
    this.number = h("span", { class: "job-id" }, `#${job.id}`);
    this.cancelButton = h(
      "button",
      {
        type: "button",
        class: "btn btn-small btn-quiet",
        dataset: { action: "cancel" },
        onclick: () => panel.cancel(this.id),
      },
      icon("stop"),
      "Cancel",
    );
    this.reportButton = h(
      "button",
      {
        type: "button",
        class: "btn btn-small",
        dataset: { action: "report" },
        onclick: () => panel.handlers.onViewReport(this.id),
      },
      "View report",
    );
    this.againButton = h(
      "button",
      {
        type: "button",
        class: "btn-icon",
        title: "Run again",
        "aria-label": "Run again",
        dataset: { action: "again" },
        onclick: () => panel.handlers.onRunAgain(panel.store.get(this.id)),
      },
      icon("refresh"),
    );
    this.params = h("p", { class: "job-params" });
    this.fill = h("div", { class: "progress-fill" });
    this.bar = h("div", { class: "progress", role: "progressbar", "aria-valuemin": "0" }, this.fill);
    this.meta = h("p", { class: "job-meta" });
    this.error = h("p", { class: "job-error" });
    this.tail = h("pre", { class: "job-tail", "aria-label": "Latest output" });
    this.el = h(
      "article",
      { class: "job", dataset: { job: String(job.id) } },
      h(
        "div",
        { class: "job-top" },
        this.badge,
        h("div", { class: "job-title" }, this.title, this.number),
        h("div", { class: "job-actions" }, this.cancelButton, this.reportButton, this.againButton),
      ),
      this.params,
      this.bar,
      this.meta,
      this.error,
      this.tail,
    );
    this.update(job);
  }

  update(job) {
    const finished = TERMINAL.has(job.state);
    this.el.dataset.state = job.state;
    this.badge.className = `badge state-${job.state}`;
    this.badge.textContent = STATE_LABELS[job.state] ?? job.state;
    this.title.textContent = baseName(job.notebook) || "…";
    this.title.title = job.notebook ?? "";
    this.el.setAttribute("aria-label", `Job ${job.id}: ${job.notebook} (${STATE_LABELS[job.state] ?? job.state})`);
    const params = formatParameters(job.parameters);
    this.params.textContent = params;
    this.params.hidden = !params;

    const { cell = 0, total = 0 } = job.progress ?? {};
    const shown = job.state === "succeeded" ? Math.max(cell, total) : cell;
    this.bar.hidden = job.state === "queued" || (finished && !total);
    this.bar.setAttribute("aria-valuemax", String(total));
    this.bar.setAttribute("aria-valuenow", String(shown));
    this.bar.setAttribute("aria-label", progressLabel(job.state, job.progress, shown));
    this.fill.style.width = total ? `${Math.min(100, (100 * shown) / total)}%` : "0%";

    const cancelling = Boolean(job.cancel_requested) && !finished;
    this.cancelButton.hidden = finished;
    this.cancelButton.disabled = cancelling;
    this.cancelButton.lastChild.textContent = cancelling ? "Cancelling…" : "Cancel";
    this.reportButton.hidden = !(finished && job.report_url);
    this.againButton.hidden = !finished;

    const error = finished && job.state !== "succeeded" ? describeError(job.error) : "";
    this.error.textContent = error;
    this.error.hidden = !error;
    // The text is cut to a few lines: the whole of it on hover (and in the report).
    const reason = job.error?.reason ?? "";
    this.error.title = reason && reason !== error ? `${error}\n${reason}` : error;

    const rows = job.output.rows;
    fill(this.tail, tailNodes(rows));
    this.tail.hidden = finished || !rows.length;
    this.tail.scrollTop = this.tail.scrollHeight;
    this.tick(job);
  }

  /** The parts that change with time alone: elapsed, ETA, "3 min ago". */
  tick(job) {
    const store = this.panel.store;
    const parts = [];
    if (job.state === "queued") {
      parts.push(job.queue_position ? `Position ${job.queue_position} in the queue` : "Waiting in the queue");
      if (job.created_at) parts.push(`queued ${formatWhen(job.created_at)}`);
    } else if (job.state === "running") {
      parts.push(runningText(job.progress));
      const elapsed = store.elapsedS(job);
      if (elapsed != null) parts.push(`${formatDuration(elapsed)} elapsed`);
      const eta = this.eta(job, elapsed);
      if (eta) parts.push(eta);
    } else {
      const verb = {
        succeeded: "Took",
        failed: "Failed after",
        cancelled: "Cancelled after",
        timed_out: "Timed out after",
      };
      if (job.duration_s != null) parts.push(`${verb[job.state] ?? "Took"} ${formatDuration(job.duration_s)}`);
      if (job.finished_at) parts.push(formatWhen(job.finished_at));
      this.meta.title = job.finished_at ? `Finished ${formatFullTime(job.finished_at)}` : "";
    }
    this.meta.textContent = parts.join(" · ");
  }

  eta(job, elapsed) {
    const last = this.panel.store.lastRun(job.notebook);
    if (!last.loaded || last.duration_s == null || elapsed == null) return "";
    const left = last.duration_s - elapsed;
    if (left >= 1) return `about ${formatDuration(left)} left`;
    return `longer than the last run (${formatDuration(last.duration_s)})`;
  }
}

export class JobsPanel {
  /** handlers: onViewReport(id), onRunAgain(job), onError(error) */
  constructor(store, handlers) {
    this.store = store;
    this.handlers = handlers;
    this.cards = new Map();
    this.lists = {};
    this.counts = {};
    this.sections = {};
    this.recentLimit = RECENT_LIMIT; // finished jobs shown: "Show more" adds a page
    this.moreButton = h(
      "button",
      { type: "button", class: "btn btn-small btn-quiet list-more", hidden: true, onclick: () => this.showMore() },
      "Show more",
    );
    for (const { key, title } of SECTIONS) {
      this.counts[key] = h("span", { class: "count" });
      this.lists[key] = h("div", { class: "job-list" });
      this.sections[key] = h(
        "section",
        { class: `job-section job-section-${key}`, dataset: { section: key }, hidden: true },
        h("h3", { class: "section-title" }, title, this.counts[key]),
        this.lists[key],
        key === "finished" ? this.moreButton : null,
      );
    }
    this.empty = h(
      "div",
      { class: "empty" },
      icon("play", "icon empty-icon"),
      h("p", null, "No jobs yet"),
      h("p", { class: "muted" }, "Pick a notebook and press Run: its progress shows up here, live."),
    );
    this.el = h(
      "section",
      { class: "card jobs-card", "aria-labelledby": "jobs-title" },
      h("header", { class: "card-head" }, h("h2", { id: "jobs-title" }, "Jobs")),
      h(
        "div",
        { class: "card-body jobs-body" },
        this.empty,
        SECTIONS.map(({ key }) => this.sections[key]),
      ),
    );
    store.onChange((job) => this.render(job));
    setInterval(() => this.tick(), 1000);
  }

  render(job) {
    let card = this.cards.get(job.id);
    if (!card) {
      card = new JobCard(job, this);
      this.cards.set(job.id, card);
    } else {
      card.update(job);
    }
    const key = sectionOf(job);
    if (card.el.parentElement !== this.lists[key]) this.lists[key].append(card.el);
    this.arrange();
  }

  /** Order each section (running and queued oldest first, finished newest first) and keep the recent ones. */
  arrange() {
    for (const { key } of SECTIONS) {
      const list = this.lists[key];
      const cards = [...list.children];
      const job = (el) => this.store.get(el.dataset.job);
      const order =
        key === "finished"
          ? (a, b) => job(b).id - job(a).id
          : key === "queued"
            ? (a, b) => (job(a).queue_position ?? 1e9) - (job(b).queue_position ?? 1e9) || job(a).id - job(b).id
            : (a, b) => job(a).id - job(b).id;
      const sorted = [...cards].sort(order);
      if (sorted.some((el, i) => el !== cards[i])) fill(list, sorted);
      if (key === "finished") {
        for (const el of sorted.slice(this.recentLimit)) {
          el.remove();
          this.cards.delete(Number(el.dataset.job));
          this.store.olderOnServer = true; // still there, one "Show more" away
        }
        this.moreButton.hidden = !this.store.olderOnServer;
      }
      const shown = Math.min(sorted.length, key === "finished" ? this.recentLimit : Infinity);
      this.counts[key].textContent = String(shown);
      this.sections[key].hidden = sorted.length === 0;
    }
    this.empty.hidden = this.cards.size > 0;
  }

  /** Draw the eye to a job just submitted from this page. */
  highlight(id) {
    const card = this.cards.get(Number(id));
    if (!card) return;
    card.el.classList.remove("fresh");
    void card.el.offsetWidth; // restart the animation
    card.el.classList.add("fresh");
    card.el.scrollIntoView({ block: "nearest", behavior: "smooth" });
  }

  tick() {
    for (const card of this.cards.values()) {
      const job = this.store.get(card.id);
      if (job) card.tick(job);
    }
  }

  /** The next page of older finished jobs, below those shown. */
  async showMore() {
    const shown = this.lists.finished.children.length;
    this.recentLimit = shown + RECENT_LIMIT;
    this.moreButton.disabled = true;
    try {
      await this.store.loadFinished(shown, RECENT_LIMIT);
    } catch (error) {
      this.handlers.onError(error);
    } finally {
      this.moreButton.disabled = false;
      this.arrange();
    }
  }

  async cancel(id) {
    const card = this.cards.get(id);
    if (card) card.cancelButton.disabled = true;
    try {
      await this.store.cancel(id);
    } catch (error) {
      if (card) card.cancelButton.disabled = false;
      this.handlers.onError(error);
    }
  }
}

/** The tail's lines as text nodes, with the runs printed in colour in spans of their classes (sgr.js). */
function tailNodes(rows) {
  return rows.map((row, i) => [
    i ? "\n" : null,
    row.runs.map(({ text, className }) => (className ? h("span", { class: className }, text) : text)),
  ]);
}
