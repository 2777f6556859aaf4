// The Notifications section: webhook endpoints (added with their signing secret shown once, listed, rotated,
// deleted), each endpoint's delivery log (state, status, latency, attempts, redeliver), and e-mail recipients.
// Delivery attempts arrive live as `delivery.attempted` events; the open log is read again when one does.

import { api, request } from "./api.js";
import { confirmDialog, modal } from "./dialogs.js";
import { fill, formatFullTime, formatWhen, h, icon } from "./dom.js";

const EVENTS = [
  ["job.succeeded", "Succeeded"],
  ["job.failed", "Failed"],
  ["job.timed_out", "Timed out"],
  ["job.cancelled", "Cancelled"],
];
const STATES = EVENTS.map(([event, label]) => [event.slice(4), label]);
const DELIVERY_STATES = { pending: "Pending", delivered: "Delivered", failed: "Failed" };

function checkboxes(name, options, checked) {
  return h(
    "div",
    { class: "notify-checks", role: "group" },
    options.map(([value, label]) =>
      h(
        "label",
        { class: "notify-check" },
        h("input", { type: "checkbox", name, value, checked: checked.includes(value) }),
        label,
      ),
    ),
  );
}

function checkedValues(root, name) {
  return [...root.querySelectorAll(`input[name="${name}"]:checked`)].map((input) => input.value);
}

function lastAttempt(delivery) {
  return delivery.log.length ? delivery.log[delivery.log.length - 1] : null;
}

export class NotificationsPanel {
  constructor({ toasts }) {
    this.toasts = toasts;
    this.body = null; // the dialog's content while it is open
    this.logs = new Map(); // webhook id → the element its delivery log is drawn in (open logs only)
    this.reads = new Map(); // webhook id ("email" for the e-mail log) → the number of its latest read
  }

  /** A delivery attempt was made (push event): redraw that endpoint's log if it is open. */
  onDeliveryEvent(data) {
    if (!this.body) return;
    if (data.kind === "webhook" && this.logs.has(data.webhook)) this.loadLog(data.webhook);
    if (data.kind === "email") this.loadEmailLog();
  }

  fail(title, error) {
    this.toasts.show({ kind: "error", title, body: error.message });
  }

  open() {
    this.logs.clear();
    this.hookList = h("ul", { class: "hook-list", "aria-label": "Webhook endpoints" });
    this.secretBox = h("div", { class: "secret-box", hidden: true, role: "status" });
    this.emailBox = h("div", { class: "email-box" });
    this.emailLog = h("div", { class: "delivery-log email-log" });
    this.body = h(
      "div",
      { class: "notify" },
      h(
        "section",
        { class: "notify-section", "aria-labelledby": "notify-webhooks" },
        h("h3", { id: "notify-webhooks", class: "subhead" }, "Webhooks"),
        h(
          "p",
          { class: "muted" },
          "A signed POST (Standard Webhooks) to your URL when a job of yours ends. Verify it with the secret shown when you add the endpoint.",
        ),
        this.hookList,
        this.secretBox,
        this.hookForm(),
      ),
      h(
        "section",
        { class: "notify-section", "aria-labelledby": "notify-email" },
        h("h3", { id: "notify-email", class: "subhead" }, "E-mail"),
        this.emailBox,
        this.emailLog,
      ),
    );
    modal({
      title: "Notifications",
      className: "modal-notify",
      body: this.body,
      onClose: () => {
        this.body = null;
        this.logs.clear();
      },
    });
    this.loadHooks();
    this.loadEmail();
  }

  hookForm() {
    const url = h("input", {
      type: "url",
      name: "url",
      class: "input",
      placeholder: "https://example.com/nbrelay-hook",
      required: true,
      "aria-label": "Endpoint URL",
    });
    const error = h("p", { class: "field-error", role: "alert" });
    const add = h("button", { type: "submit", class: "btn btn-primary" }, icon("plus"), "Add endpoint");
    const form = h(
      "form",
      { class: "hook-form", novalidate: true },
      h("label", { class: "field-label", for: "hook-url" }, "Endpoint URL"),
      Object.assign(url, { id: "hook-url" }),
      checkboxes("event", EVENTS, ["job.succeeded", "job.failed", "job.timed_out"]),
      error,
      add,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      const events = checkedValues(form, "event");
      if (!url.value.trim()) return void (error.textContent = "Enter the URL to call.");
      if (!events.length) return void (error.textContent = "Pick at least one event.");
      add.disabled = true;
      try {
        const hook = await api.post("api/webhooks", { url: url.value.trim(), events });
        url.value = "";
        this.showSecret(hook, "Endpoint added.");
        await this.loadHooks();
      } catch (err) {
        error.textContent = err.hint ? `${err.message} (${err.hint})` : err.message;
      } finally {
        add.disabled = false;
      }
    });
    return form;
  }

  showSecret(hook, what) {
    const value = h("code", { class: "secret-value mono" }, hook.secret);
    const copy = h("button", { type: "button", class: "btn btn-small", "aria-label": "Copy the secret" }, icon("copy"), "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(hook.secret);
        copy.lastChild.textContent = "Copied";
      } catch {
        // No clipboard (an insecure origin, say): select the text so Ctrl+C does it.
        getSelection().selectAllChildren(value);
      }
    });
    fill(
      this.secretBox,
      h("p", null, h("strong", null, what), ` The signing secret of ${hook.url} — shown only now; keep it:`),
      h("div", { class: "secret-row" }, value, copy),
    );
    this.secretBox.hidden = false;
  }

  async loadHooks() {
    let hooks;
    try {
      ({ webhooks: hooks } = await api.get("api/webhooks"));
    } catch (error) {
      return this.fail("Could not read the webhooks", error);
    }
    if (!this.body) return;
    if (!hooks.length) {
      fill(this.hookList, h("li", { class: "hook-empty muted" }, "No endpoints yet."));
      return;
    }
    fill(this.hookList, hooks.map((hook) => this.hookItem(hook)));
    for (const id of [...this.logs.keys()]) {
      if (!hooks.some((hook) => hook.id === id)) this.logs.delete(id);
    }
  }

  hookItem(hook) {
    const log = h("div", { class: "delivery-log", hidden: true });
    const toggle = h("button", { type: "button", class: "btn btn-small", "aria-expanded": "false" }, "Deliveries");
    toggle.addEventListener("click", () => {
      const opening = log.hidden;
      log.hidden = !opening;
      toggle.setAttribute("aria-expanded", String(opening));
      if (opening) {
        this.logs.set(hook.id, log);
        this.loadLog(hook.id);
      } else this.logs.delete(hook.id);
    });
    const rotate = h("button", { type: "button", class: "btn btn-small btn-quiet" }, "Rotate secret");
    rotate.addEventListener("click", async () => {
      const ok = await confirmDialog({
        title: "Rotate the secret?",
        message: `Deliveries to ${hook.url} are signed with a new secret from now on; the old one stops working.`,
        confirmLabel: "Rotate",
      });
      if (!ok) return;
      try {
        this.showSecret(await api.post(`api/webhooks/${hook.id}/rotate`), "Secret rotated.");
      } catch (error) {
        this.fail("Could not rotate the secret", error);
      }
    });
    const remove = h(
      "button",
      { type: "button", class: "btn-icon", title: "Delete this endpoint", "aria-label": `Delete ${hook.url}` },
      icon("trash"),
    );
    remove.addEventListener("click", async () => {
      const ok = await confirmDialog({
        title: "Delete this endpoint?",
        message: `${hook.url} gets no more deliveries; its log goes too.`,
        confirmLabel: "Delete",
        danger: true,
      });
      if (!ok) return;
      try {
        await api.delete(`api/webhooks/${hook.id}`);
        this.logs.delete(hook.id);
        await this.loadHooks();
      } catch (error) {
        this.fail("Could not delete the endpoint", error);
      }
    });
    const events = hook.events.map((e) => EVENTS.find(([value]) => value === e)?.[1] ?? e).join(", ");
    return h(
      "li",
      { class: "hook", dataset: { hook: hook.id } },
      h(
        "div",
        { class: "hook-top" },
        h("span", { class: "hook-url mono", title: hook.url }, hook.url),
        h("span", { class: "hook-actions" }, toggle, rotate, remove),
      ),
      h(
        "div",
        { class: "hook-meta muted" },
        events,
        hook.schedule_id != null ? ` · schedule ${hook.schedule_id} only` : " · all your jobs",
      ),
      log,
    );
  }

  async loadLog(id) {
    const log = this.logs.get(id);
    if (!log) return;
    // Attempts can come in bursts: only the newest read may draw, or an older answer arriving late would.
    const reading = (this.reads.get(id) ?? 0) + 1;
    this.reads.set(id, reading);
    let answer;
    try {
      answer = await api.get(`api/webhooks/${id}/deliveries`, { limit: 20 });
    } catch (error) {
      answer = { error };
    }
    if (this.reads.get(id) !== reading) return;
    if (answer.error) fill(log, h("p", { class: "field-error" }, answer.error.message));
    else fill(log, this.deliveryTable(answer.deliveries, (delivery) => this.redeliverButton(id, delivery)));
  }

  deliveryTable(deliveries, action) {
    if (!deliveries.length) return h("p", { class: "muted" }, "No deliveries yet.");
    const rows = deliveries.map((delivery) => {
      const last = lastAttempt(delivery);
      const status = last ? (last.status_code ?? "—") : "—";
      const why = last?.error ? `${last.error}${last.response_head ? ` — ${last.response_head}` : ""}` : last?.response_head;
      return h(
        "tr",
        { class: "delivery", dataset: { delivery: delivery.id, state: delivery.state } },
        h("td", null, `#${delivery.job_id}`),
        h("td", null, delivery.kind === "email" ? delivery.target : delivery.event),
        h("td", null, h("span", { class: `badge delivery-${delivery.state}` }, DELIVERY_STATES[delivery.state] ?? delivery.state)),
        h("td", { class: "delivery-status", title: why ?? "" }, String(status)),
        h("td", { class: "delivery-latency" }, last ? `${Math.round(last.latency_ms)} ms` : "—"),
        h("td", { class: "delivery-attempts" }, String(delivery.attempts)),
        h(
          "td",
          { title: last ? formatFullTime(last.attempted_at) : "" },
          delivery.state === "pending" && delivery.next_attempt_at
            ? `next ${formatWhen(delivery.next_attempt_at)}`
            : last
              ? formatWhen(last.attempted_at)
              : "—",
        ),
        h("td", null, action ? action(delivery) : null),
      );
    });
    return h(
      "table",
      { class: "delivery-table" },
      h(
        "thead",
        null,
        h("tr", null, ["Job", "Event", "State", "Status", "Latency", "Attempts", "When", ""].map((t) => h("th", null, t))),
      ),
      h("tbody", null, rows),
    );
  }

  redeliverButton(id, delivery) {
    const button = h("button", { type: "button", class: "btn btn-small btn-quiet" }, "Redeliver");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api.post(`api/webhooks/${id}/deliveries/${delivery.id}/redeliver`);
        await this.loadLog(id);
      } catch (error) {
        this.fail("Could not redeliver", error);
        button.disabled = false;
      }
    });
    return button;
  }

  async loadEmail() {
    let settings;
    try {
      settings = await api.get("api/notify/email");
    } catch (error) {
      return this.fail("Could not read the e-mail settings", error);
    }
    if (!this.body) return;
    const addresses = h("textarea", {
      id: "notify-addresses",
      name: "addresses",
      class: "input",
      rows: 2,
      placeholder: "you@example.com, team@example.com",
    });
    addresses.value = settings.addresses.join(", ");
    const error = h("p", { class: "field-error", role: "alert" });
    const save = h("button", { type: "submit", class: "btn" }, "Save");
    const form = h(
      "form",
      { class: "email-form", novalidate: true },
      settings.smtp_configured
        ? null
        : h("p", { class: "form-error" }, "This server has no SMTP server set up (NBRELAY_SMTP_HOST): no e-mail goes out."),
      h("label", { class: "field-label", for: "notify-addresses" }, "Recipients"),
      addresses,
      h("p", { class: "field-help" }, "An e-mail when a job of yours ends in one of these states:"),
      checkboxes("on", STATES, settings.on),
      error,
      save,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.textContent = "";
      save.disabled = true;
      const list = addresses.value
        .split(/[\s,;]+/)
        .map((a) => a.trim())
        .filter(Boolean);
      try {
        await request("PUT", "api/notify/email", { json: { addresses: list, on: checkedValues(form, "on") } });
        this.toasts.show({ kind: "success", title: "E-mail recipients saved", timeoutMs: 4000 });
      } catch (err) {
        error.textContent = err.message;
      } finally {
        save.disabled = false;
      }
    });
    fill(this.emailBox, form);
    this.loadEmailLog();
  }

  async loadEmailLog() {
    const reading = (this.reads.get("email") ?? 0) + 1;
    this.reads.set("email", reading);
    try {
      const answer = await api.get("api/notify/email/deliveries", { limit: 10 });
      if (!this.body || this.reads.get("email") !== reading) return;
      fill(this.emailLog, answer.deliveries.length ? this.deliveryTable(answer.deliveries, null) : null);
    } catch {
      // the recipients form is what matters here; the log is a bonus
    }
  }
}
