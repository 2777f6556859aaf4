// The report viewer: a job's HTML report in a sandboxed frame (scripts may run, but on an opaque origin: no
// access to the page, its cookies or the API), the notebook's report history beside it, and downloads.

import { api, urls } from "./api.js";
import { confirmDialog } from "./dialogs.js";
import {
  baseName,
  describeError,
  fill,
  formatBytes,
  formatDuration,
  formatFullTime,
  formatParameters,
  formatWhen,
  h,
  icon,
  stateBadge,
} from "./dom.js";
import { TERMINAL } from "./jobs.js";

// No allow-same-origin: with it, the report's scripts could reach into the page. Popups may open (links in
// a report), escaping the sandbox so that the pages they open work normally.
const SANDBOX = "allow-scripts allow-popups allow-popups-to-escape-sandbox";
const HISTORY_PAGE = 50;
const MAX_LIMIT = 500; // the most the API lists at once

export class ReportViewer {
  /** handlers: onClose(), onOpen(id), toasts */
  constructor(store, { onClose, onOpen, toasts }) {
    this.store = store;
    this.onClose = onClose;
    this.onOpen = onOpen;
    this.toasts = toasts;
    this.jobId = null;
    this.notebook = null;
    this.title = h("h2", { class: "viewer-title" });
    this.badge = h("span");
    this.sub = h("p", { class: "viewer-sub" });
    this.links = h("div", { class: "viewer-links" });
    this.frameBox = h("div", { class: "viewer-frame" });
    this.history = h("ol", { class: "history-list", "aria-label": "Report history" });
    this.historyTitle = h("h3", { class: "section-title" }, "History");
    this.moreHistory = h(
      "button",
      {
        type: "button",
        class: "btn btn-small btn-quiet list-more",
        hidden: true,
        onclick: () => this.loadOlderHistory(),
      },
      "Show older",
    );
    this.el = h(
      "section",
      { class: "viewer", hidden: true, "aria-label": "Report" },
      h(
        "header",
        { class: "viewer-head" },
        h(
          "button",
          {
            type: "button",
            class: "btn btn-small btn-quiet",
            onclick: () => this.onClose(),
            "aria-label": "Back to the jobs",
          },
          icon("back"),
          "Back",
        ),
        h(
          "div",
          { class: "viewer-heading" },
          h("div", { class: "viewer-title-row" }, this.title, this.badge),
          this.sub,
        ),
        this.links,
      ),
      h(
        "div",
        { class: "viewer-body" },
        this.frameBox,
        h("aside", { class: "viewer-history card" }, this.historyTitle, this.history, this.moreHistory),
      ),
    );
    this.waitingFor = null; // the unfinished job on screen: shown again once it finishes
    store.onChange((job) => {
      if (job.id !== this.waitingFor || !TERMINAL.has(job.state)) return;
      this.waitingFor = null;
      if (job.id === this.jobId) this.show(job.id);
    });
  }

  get isOpen() {
    return !this.el.hidden;
  }

  close() {
    this.el.hidden = true;
    this.jobId = null;
    this.waitingFor = null;
    this.frameBox.replaceChildren(); // stops whatever the report runs
  }

  async show(id) {
    this.jobId = Number(id);
    this.el.hidden = false;
    let job = this.store.get(id);
    try {
      job = this.store.merge(await api.get(urls.job(id)));
    } catch (error) {
      if (!job) {
        this.renderMissing(error.message);
        return;
      }
    }
    if (this.jobId !== job.id) return; // another report was opened meanwhile
    this.renderHeader(job);
    this.renderFrame(job);
    if (this.notebook !== job.notebook) {
      this.notebook = job.notebook;
      fill(this.history);
    }
    this.loadHistory(job.notebook);
  }

  renderMissing(message) {
    fill(this.title, "Report not found");
    fill(this.badge);
    fill(this.sub, `Job #${this.jobId}`); // the message itself is shown once, below
    fill(this.links);
    fill(this.frameBox, h("div", { class: "empty" }, icon("alert", "icon empty-icon"), h("p", null, message)));
    this.notebook = null; // no history belongs here: neither the list nor the count of the report before
    fill(this.historyTitle, "History");
    fill(this.history);
    this.moreHistory.hidden = true;
  }

  renderHeader(job) {
    fill(this.title, baseName(job.notebook));
    this.title.title = job.notebook;
    fill(this.badge, stateBadge(job.state));
    const parts = [`Job #${job.id}`];
    if (!TERMINAL.has(job.state)) parts.push(unfinishedText(job)); // shown again when it finishes
    if (job.finished_at) parts.push(`finished ${formatWhen(job.finished_at)}`);
    if (job.duration_s != null && TERMINAL.has(job.state)) parts.push(`took ${formatDuration(job.duration_s)}`);
    const params = formatParameters(job.parameters);
    if (params) parts.push(params);
    fill(this.sub, parts.join(" · "));
    this.sub.title = job.finished_at ? formatFullTime(job.finished_at) : "";
    const stem = baseName(job.notebook).replace(/\.ipynb$/, "");
    fill(
      this.links,
      job.report_url
        ? [
            h(
              "a",
              { class: "btn btn-small", href: urls.report(job.id), download: `${job.id}-${stem}.html` },
              icon("download"),
              "HTML",
            ),
            h(
              "a",
              { class: "btn btn-small", href: urls.notebook(job.id), download: `${job.id}-${stem}.ipynb` },
              icon("download"),
              "Notebook",
            ),
            h(
              "a",
              {
                class: "btn-icon",
                href: urls.report(job.id),
                target: "_blank",
                rel: "noopener noreferrer",
                title: "Open in a new tab",
                "aria-label": "Open the report in a new tab",
              },
              icon("external"),
            ),
          ]
        : null,
    );
  }

  renderFrame(job) {
    const current = this.frameBox.querySelector("iframe");
    if (current && current.dataset.job === String(job.id)) return;
    if (!job.report_url) {
      const waiting = !TERMINAL.has(job.state);
      this.waitingFor = waiting ? job.id : null;
      fill(
        this.frameBox,
        h(
          "div",
          { class: "empty" },
          waiting ? h("span", { class: "spinner large", "aria-hidden": "true" }) : icon("alert", "icon empty-icon"),
          h("p", null, waiting ? "The report appears here when the job finishes." : "This job left no report."),
          !waiting && job.error ? h("p", { class: "muted" }, describeError(job.error)) : null,
        ),
      );
      return;
    }
    fill(
      this.frameBox,
      h("iframe", {
        src: urls.report(job.id),
        sandbox: SANDBOX,
        referrerpolicy: "no-referrer",
        title: `Report of job ${job.id}`,
        dataset: { job: String(job.id) },
      }),
    );
  }

  /** The notebook's reports, newest first: as many as are listed already (at least a page), from the top. */
  async loadHistory(notebook) {
    const listed = this.history.querySelectorAll(".history-item").length;
    const limit = Math.min(MAX_LIMIT, Math.max(HISTORY_PAGE, listed));
    let answer;
    try {
      answer = await api.get("api/reports", { notebook, limit });
    } catch {
      return;
    }
    if (notebook !== this.notebook) return;
    if (!answer.reports.length) {
      fill(this.history, h("li", { class: "muted history-empty" }, "No reports yet."));
    } else {
      fill(this.history, answer.reports.map((report) => this.historyItem(report)));
    }
    this.showHistoryTotal(answer.total);
  }

  /** The next page of the history, below the reports listed. */
  async loadOlderHistory() {
    const notebook = this.notebook;
    const items = [...this.history.querySelectorAll(".history-item")];
    this.moreHistory.disabled = true;
    let answer;
    try {
      answer = await api.get("api/reports", { notebook, limit: HISTORY_PAGE, offset: items.length });
    } catch (error) {
      this.toasts.show({ kind: "error", title: "Could not read older reports", body: error.message });
      return;
    } finally {
      this.moreHistory.disabled = false;
    }
    if (notebook !== this.notebook) return;
    // Reports made meanwhile shift the pages: one already listed may come again.
    const listed = new Set(items.map((item) => Number(item.dataset.job)));
    const older = answer.reports.filter((report) => !listed.has(report.job));
    this.history.append(...older.map((report) => this.historyItem(report)));
    this.showHistoryTotal(answer.total);
  }

  showHistoryTotal(total) {
    fill(this.historyTitle, "History", h("span", { class: "count" }, String(total)));
    const left = total - this.history.querySelectorAll(".history-item").length;
    this.moreHistory.hidden = left <= 0;
    this.moreHistory.textContent = `Show older (${left} more)`;
  }

  historyItem(report) {
    const current = report.job === this.jobId;
    const params = formatParameters(report.parameters);
    const remove = h(
      "button",
      {
        type: "button",
        class: "btn-icon history-delete",
        title: "Delete this report",
        "aria-label": `Delete the report of job ${report.job}`,
        onclick: () => this.deleteReport(report),
      },
      icon("trash"),
    );
    return h(
      "li",
      { class: current ? "history-item current" : "history-item", dataset: { job: String(report.job) } },
      h(
        "button",
        {
          type: "button",
          class: "history-open",
          "aria-current": current ? "true" : null,
          onclick: () => this.onOpen(report.job),
        },
        h(
          "span",
          { class: "history-line" },
          h("span", { class: `dot state-${report.state}`, title: report.state }),
          h("span", { class: "history-job" }, `#${report.job}`),
          h(
            "span",
            { class: "history-when", title: formatFullTime(report.finished_at) },
            formatWhen(report.finished_at),
          ),
        ),
        h(
          "span",
          { class: "history-detail" },
          [formatDuration(report.duration_s), formatBytes(report.size_bytes)].filter(Boolean).join(" · "),
        ),
        params ? h("span", { class: "history-params" }, params) : null,
      ),
      remove,
    );
  }

  async deleteReport(report) {
    const ok = await confirmDialog({
      title: "Delete this report?",
      message: `The report and executed notebook of job #${report.job} will be deleted. The job stays in the list.`,
      confirmLabel: "Delete",
      danger: true,
    });
    if (!ok) return;
    try {
      await api.delete(`api/reports/${Number(report.job)}`);
    } catch (error) {
      this.toasts.show({ kind: "error", title: "Could not delete the report", body: error.message });
      return;
    }
    if (report.job === this.jobId) {
      this.store.merge({ id: report.job, state: report.state, report_url: null, notebook_url: null });
      this.frameBox.replaceChildren();
      this.show(report.job);
    } else {
      this.loadHistory(this.notebook);
    }
  }
}

/** "running, started 2 min ago" or "waiting in the queue": a job that has not finished took nothing yet. */
function unfinishedText(job) {
  if (job.state !== "running") return "waiting in the queue";
  return job.started_at ? `running, started ${formatWhen(job.started_at)}` : "running";
}
