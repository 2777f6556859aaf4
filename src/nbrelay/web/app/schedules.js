// Schedules on the page: the dialog that makes one from a notebook's run form ("Schedule…"), and the Schedules
// section: each schedule's next runs, last run, state, its jobs live, pause/resume, run now and delete. Kept up
// to date by the schedule.* events of the user's stream (main.js hands them to onEvent).

import { api } from "./api.js";
import { confirmDialog, modal } from "./dialogs.js";
import { baseName, describeError, fill, formatWhen, h, icon, stateBadge } from "./dom.js";

const PRESETS = [
  ["0 9 * * MON-FRI", "Weekdays at 09:00"],
  ["@daily", "Every day at midnight"],
  ["0 7 * * *", "Every day at 07:00"],
  ["@hourly", "Every hour"],
  ["0 8 * * MON", "Mondays at 08:00"],
  ["@monthly", "The 1st of each month"],
];
// Which field a 422 is about, by its code (the API also says it in error.field).
const FIELD_OF = {
  invalid_cron: "cron",
  invalid_timezone: "timezone",
  invalid_notify_email: "notify_email",
  invalid_overlap: "overlap",
  invalid_missed: "missed",
};
const JOBS_SHOWN = 3;

function browserZone() {
  try {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  } catch {
    return "UTC";
  }
}

/** "2026-12-07T09:00:00+01:00" → "Mon 7 Dec 09:00" as the schedule's own clock reads (the offset is kept). */
export function formatRun(iso) {
  const match = /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)/.exec(String(iso ?? ""));
  if (!match) return String(iso ?? "");
  const [, year, month, day, hour, minute] = match;
  const date = new Date(Date.UTC(Number(year), Number(month) - 1, Number(day)));
  const weekday = date.toLocaleDateString(undefined, { weekday: "short", timeZone: "UTC" });
  const monthName = date.toLocaleDateString(undefined, { month: "short", timeZone: "UTC" });
  return `${weekday} ${Number(day)} ${monthName} ${hour}:${minute}`;
}

function field(name, label, input, help) {
  const error = h("p", { class: "field-error", role: "alert" });
  const el = h(
    "div",
    { class: "field", dataset: { field: name } },
    h("label", { for: input.id, class: "field-label" }, label),
    input,
    help ? h("p", { class: "field-help" }, help) : null,
    error,
  );
  input.addEventListener("input", () => setError(""));
  const setError = (message) => {
    error.textContent = message;
    el.classList.toggle("invalid", Boolean(message));
    input.setAttribute("aria-invalid", message ? "true" : "false");
  };
  return { el, input, setError };
}

/**
 * The schedule dialog for a run form's values (`run`: notebook, parameters, timeouts, steps, as POST /api/jobs
 * takes them). onCreated(schedule) gets the 201 answer.
 */
export function openScheduleDialog(run, { toasts, onCreated }) {
  const cronInput = h("input", {
    type: "text",
    id: "schedule-cron",
    name: "cron",
    class: "input mono",
    value: PRESETS[0][0],
    spellcheck: "false",
    autocomplete: "off",
  });
  const preset = h(
    "select",
    { class: "input", id: "schedule-preset", "aria-label": "Common schedules" },
    h("option", { value: "" }, "Common schedules…"),
    PRESETS.map(([cron, label]) => h("option", { value: cron }, label)),
  );
  preset.addEventListener("change", () => {
    if (preset.value) cronInput.value = preset.value;
    cron.setError("");
  });
  const cron = field(
    "cron",
    "When (cron)",
    cronInput,
    "Five fields: minute hour day-of-month month day-of-week, or @hourly, @daily, @weekly, @monthly.",
  );
  cron.el.insertBefore(preset, cronInput.nextSibling);
  const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
  const timezone = field(
    "timezone",
    "Time zone",
    h("input", {
      type: "text",
      id: "schedule-timezone",
      name: "timezone",
      class: "input",
      value: browserZone(),
      list: "schedule-zones",
      spellcheck: "false",
      autocomplete: "off",
    }),
    "An IANA name: Europe/Berlin, America/New_York, UTC.",
  );
  timezone.el.append(h("datalist", { id: "schedule-zones" }, zones.map((z) => h("option", { value: z }))));
  const name = field(
    "name",
    "Name",
    h("input", { type: "text", id: "schedule-name", name: "name", class: "input", placeholder: "optional" }),
  );
  const select = (id, options) =>
    h(
      "select",
      { class: "input", id, name: id.replace("schedule-", "") },
      options.map(([value, label]) => h("option", { value }, label)),
    );
  const overlap = field(
    "overlap",
    "While the previous run is unfinished",
    select("schedule-overlap", [
      ["skip", "skip the tick"],
      ["queue", "queue it: run once the previous run ends"],
    ]),
  );
  const missed = field(
    "missed",
    "Ticks missed while the service was down",
    select("schedule-missed", [
      ["run_once", "run once when it is back"],
      ["skip", "skip them"],
    ]),
  );
  const emails = field(
    "notify_email",
    "E-mail when a run ends",
    h("input", {
      type: "text",
      id: "schedule-emails",
      name: "notify_email",
      class: "input",
      placeholder: "ops@example.com, me@example.com",
    }),
  );
  const onFailed = h("input", { type: "checkbox", id: "schedule-on-failed", checked: true });
  const onSucceeded = h("input", { type: "checkbox", id: "schedule-on-succeeded" });
  emails.el.append(
    h(
      "div",
      { class: "field-row" },
      h("label", null, onFailed, " failed"),
      h("label", null, onSucceeded, " succeeded"),
    ),
  );
  const fields = { cron, timezone, name, overlap, missed, notify_email: emails };
  const banner = h("div", { class: "form-error", role: "alert", hidden: true });
  const parameters = Object.entries(run.parameters ?? {});
  const submit = h(
    "button",
    { type: "submit", class: "btn btn-primary", form: "schedule-form" },
    icon("clock"),
    "Create schedule",
  );
  const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
  const form = h(
    "form",
    { id: "schedule-form", class: "run-form schedule-form", novalidate: true },
    banner,
    h(
      "p",
      { class: "run-sub" },
      h("span", { class: "mono" }, run.notebook),
      parameters.length ? ` · ${parameters.length} parameter${parameters.length === 1 ? "" : "s"} from the run form` : "",
    ),
    h(
      "p",
      { class: "field-help" },
      "In a text parameter, {{ tick_date }}, {{ tick_time }} or {{ tick_iso }} become the run's scheduled time.",
    ),
    cron.el,
    timezone.el,
    name.el,
    overlap.el,
    missed.el,
    emails.el,
  );
  const { dialog, close } = modal({
    title: `Schedule ${baseName(run.notebook)}`,
    label: `Schedule ${run.notebook}`,
    className: "run-dialog schedule-dialog",
    body: form,
    footer: [cancel, submit],
  });
  cancel.addEventListener("click", () => close(null));
  const showBanner = (message) => {
    fill(banner, icon("alert"), h("span", null, message));
    banner.hidden = !message;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showBanner("");
    Object.values(fields).forEach((f) => f.setError(""));
    const addresses = emails.input.value
      .split(/[,;\s]+/)
      .map((a) => a.trim())
      .filter(Boolean);
    const body = {
      ...run,
      cron: cronInput.value.trim(),
      timezone: timezone.input.value.trim(),
      overlap: overlap.input.value,
      missed: missed.input.value,
      notify_email: addresses,
      notify_on: addresses.length
        ? [onFailed.checked ? "failed" : null, onSucceeded.checked ? "succeeded" : null].filter(Boolean)
        : [],
    };
    if (name.input.value.trim()) body.name = name.input.value.trim();
    submit.disabled = true;
    dialog.setAttribute("aria-busy", "true");
    try {
      const schedule = await api.post("api/schedules", body);
      close(schedule);
      onCreated(schedule);
      const next = schedule.next_runs[0];
      toasts.show({
        kind: "success",
        title: `Scheduled ${baseName(schedule.notebook)}`,
        body: next ? `Next run: ${formatRun(next)} (${schedule.timezone})` : "Paused",
        timeoutMs: 6000,
      });
    } catch (error) {
      submit.disabled = false;
      dialog.removeAttribute("aria-busy");
      const target = fields[FIELD_OF[error.code]];
      if (error.status === 422 && target) target.setError(error.message);
      else showBanner(error.message);
      (dialog.querySelector(".invalid input") ?? submit).focus();
    }
  });
  cronInput.focus();
  cronInput.select();
}

class ScheduleCard {
  constructor(schedule, panel) {
    this.panel = panel;
    this.el = h("article", { class: "schedule-card", dataset: { schedule: schedule.id } });
    this.update(schedule);
  }

  update(schedule) {
    this.schedule = schedule;
    const paused = schedule.state === "paused";
    const action = (label, title, run) =>
      h("button", { type: "button", class: "btn btn-small", title, onclick: run }, label);
    const buttons = h(
      "div",
      { class: "schedule-actions" },
      action("Run now", "Run the notebook now, besides its schedule", () => this.panel.runNow(schedule)),
      paused
        ? action("Resume", "Run at its times again", () => this.panel.setEnabled(schedule, true))
        : action("Pause", "No runs until resumed", () => this.panel.setEnabled(schedule, false)),
      h(
        "button",
        {
          type: "button",
          class: "btn-icon",
          title: "Delete the schedule (its jobs stay)",
          "aria-label": "Delete schedule",
          onclick: () => this.panel.remove(schedule),
        },
        icon("trash"),
      ),
    );
    const tick = schedule.last_tick;
    fill(
      this.el,
      h(
        "header",
        { class: "schedule-head" },
        icon("clock"),
        h("span", { class: "schedule-name" }, schedule.name || baseName(schedule.notebook)),
        h(
          "span",
          { class: `badge schedule-state schedule-${schedule.state}`, dataset: { state: schedule.state } },
          paused ? "Paused" : "Active",
        ),
      ),
      h(
        "p",
        { class: "schedule-when" },
        h("span", { class: "mono" }, schedule.cron),
        ` · ${schedule.timezone}`,
        schedule.name ? h("span", { class: "muted" }, ` · ${schedule.notebook}`) : null,
      ),
      schedule.next_runs.length
        ? h(
            "ol",
            { class: "schedule-next", "aria-label": "Next runs" },
            schedule.next_runs.map((iso) => h("li", { title: iso, dataset: { run: iso } }, formatRun(iso))),
          )
        : h("p", { class: "muted schedule-next-none" }, "No runs while paused."),
      h("p", { class: "field-help schedule-note schedule-last" }),
      tick && tick.outcome !== "started" && tick.error
        ? h("p", { class: "field-help schedule-note" }, `Last tick ${tick.outcome}: ${tick.error}`)
        : null,
      h("div", { class: "schedule-jobs" }),
      buttons,
    );
    this.drawJobs();
  }

  /** The schedule's newest jobs and its last run, from the page's jobs (live) or else the schedule's view. */
  drawJobs() {
    const jobs = this.panel.jobsOf(this.schedule.id).slice(0, JOBS_SHOWN);
    const newest = jobs[0];
    const viewed = this.schedule.last_run;
    const last =
      newest && (!viewed || newest.id >= viewed.job_id)
        ? { job_id: newest.id, state: newest.state, created_at: newest.created_at }
        : viewed;
    this.el.querySelector(".schedule-last").textContent = last
      ? `Last run: job #${last.job_id} ${last.state}, ${formatWhen(last.created_at)}`
      : "";
    fill(
      this.el.querySelector(".schedule-jobs"),
      jobs.map((job) =>
        h(
          "button",
          {
            type: "button",
            class: "schedule-job",
            dataset: { job: job.id, state: job.state },
            title: describeError(job.error) || `Job #${job.id}`,
            onclick: () => job.report_url && this.panel.handlers.onViewReport(job.id),
          },
          `#${job.id}`,
          stateBadge(job.state),
        ),
      ),
    );
  }
}

export class SchedulesPanel {
  /** handlers: onViewReport(id); `jobs` is the page's JobStore (the schedules' jobs are drawn live from it). */
  constructor(jobs, { toasts, ...handlers }) {
    this.jobs = jobs;
    this.toasts = toasts;
    this.handlers = handlers;
    this.cards = new Map();
    this.list = h("div", { class: "schedule-list" });
    this.empty = h(
      "p",
      { class: "muted schedules-empty" },
      "No schedules yet. Open a notebook's run form and press Schedule… to run it on a timetable.",
    );
    this.el = h(
      "section",
      { class: "card schedules-card", "aria-labelledby": "schedules-title" },
      h("header", { class: "card-head" }, h("h2", { id: "schedules-title" }, "Schedules")),
      h("div", { class: "card-body" }, this.empty, this.list),
    );
    jobs.onChange((job) => {
      if (job.schedule_id != null) this.cards.get(Number(job.schedule_id))?.drawJobs();
    });
  }

  jobsOf(scheduleId) {
    return [...this.jobs.jobs.values()]
      .filter((job) => Number(job.schedule_id) === Number(scheduleId))
      .sort((a, b) => b.id - a.id);
  }

  async load() {
    try {
      const { schedules } = await api.get("api/schedules");
      for (const id of [...this.cards.keys()]) if (!schedules.some((s) => s.id === id)) this.drop(id);
      for (const schedule of schedules) this.upsert(schedule);
      const recent = await api.get("api/jobs", { limit: 100 });
      for (const job of recent.jobs) if (job.schedule_id != null) this.jobs.merge(job);
    } catch (error) {
      this.toasts.show({ kind: "error", title: "Could not read the schedules", body: error.message });
    }
  }

  /** A schedule.* push event. */
  onEvent(event) {
    const data = event.data ?? {};
    if (event.type === "schedule.deleted") this.drop(Number(data.schedule));
    else if (data.view) this.upsert(data.view);
  }

  upsert(schedule) {
    let card = this.cards.get(schedule.id);
    if (card) card.update(schedule);
    else {
      card = new ScheduleCard(schedule, this);
      this.cards.set(schedule.id, card);
      this.list.prepend(card.el);
    }
    this.empty.hidden = this.cards.size > 0;
    return card;
  }

  drop(id) {
    this.cards.get(id)?.el.remove();
    this.cards.delete(id);
    this.empty.hidden = this.cards.size > 0;
  }

  async runNow(schedule) {
    try {
      const job = await api.post(`api/schedules/${Number(schedule.id)}/run`);
      this.jobs.merge(job);
    } catch (error) {
      this.toasts.show({ kind: "error", title: "Could not run it", body: error.message });
    }
  }

  async setEnabled(schedule, enabled) {
    try {
      this.upsert(await api.patch(`api/schedules/${Number(schedule.id)}`, { enabled }));
    } catch (error) {
      this.toasts.show({ kind: "error", title: "Could not change the schedule", body: error.message });
    }
  }

  async remove(schedule) {
    const sure = await confirmDialog({
      title: "Delete the schedule?",
      message: `${schedule.name || schedule.notebook} will no longer run at ${schedule.cron}. Its jobs and reports stay.`,
      confirmLabel: "Delete",
      danger: true,
    });
    if (!sure) return;
    try {
      await api.delete(`api/schedules/${Number(schedule.id)}`);
      this.drop(schedule.id);
    } catch (error) {
      this.toasts.show({ kind: "error", title: "Could not delete the schedule", body: error.message });
    }
  }
}
