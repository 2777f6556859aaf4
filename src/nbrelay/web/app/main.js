// The nbrelay page: log-in when needed, then the notebook browser, the live jobs panel and the report viewer,
// all fed by one push client (../nbrelay.js) and the REST API.

import NbrelayClient from "../nbrelay.js";
import { api, whenUnauthorized } from "./api.js";
import { fillOutputs } from "./backfill.js";
import { baseName, describeError, formatDuration, h, icon, STATE_LABELS } from "./dom.js";
import { FileBrowser } from "./files.js";
import { JobsPanel, JobStore } from "./jobs.js";
import { ReportViewer } from "./report.js";
import { openRunDialog } from "./run.js";
import { openScheduleDialog, SchedulesPanel } from "./schedules.js";
import { BrowserNotifier, Toasts } from "./toasts.js";
import { NotificationsPanel } from "./webhooks.js";

const root = document.getElementById("app");
const STATUS_TEXT = {
  connecting: ["Connecting…", "Connecting to the server"],
  live: ["Live", "Changes arrive as they happen (WebSocket)"],
  reconnecting: ["Reconnecting…", "The connection dropped; reconnecting. Nothing is lost meanwhile."],
  fallback: ["Live · SSE", "Changes arrive as they happen (server-sent events: WebSocket does not get through here)"],
  closed: ["Offline", "Not connected to the server"],
};
const NO_NETWORK_TEXT = ["Offline", "This device has no network: the page reconnects as soon as it is back."];
const AWAY_NOTICE_MS = 1000; // a reconnect after a longer break is worth a word

function setMode(mode) {
  document.documentElement.dataset.page = mode;
  root.removeAttribute("aria-busy");
}

function logo() {
  return h("span", { class: "brand" }, h("span", { class: "brand-mark" }, icon("logo")), h("span", null, "nbrelay"));
}

// --- log-in ---------------------------------------------------------------------------------------------------

function showLogin(message = "") {
  whenUnauthorized(null); // a wrong token answers 401 too: that is for this form to say
  const input = h("input", {
    type: "password",
    id: "token",
    name: "token",
    class: "input",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
  });
  const error = h("p", { class: "field-error", role: "alert" }, message);
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, "Sign in");
  const form = h(
    "form",
    { class: "card login-card", novalidate: true },
    logo(),
    h("h1", null, "Sign in"),
    h(
      "p",
      { class: "muted" },
      "Paste your API token. An administrator makes one with ",
      h("code", null, "nbrelay token create NAME"),
      ".",
    ),
    h("div", { class: "field" }, h("label", { for: "token", class: "field-label" }, "API token"), input, error),
    submit,
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!input.value.trim()) {
      error.textContent = "Enter your token.";
      return;
    }
    submit.disabled = true;
    try {
      await api.post("api/session", { token: input.value.trim() });
      // Signed in again after a session ended: a fresh page, rather than a second app beside the old one's timers.
      if (started) location.reload();
      else start(await api.get("api/page"));
    } catch (err) {
      error.textContent = err.code === "bad_token" ? "That token is unknown or was revoked." : err.message;
      submit.disabled = false;
      input.select();
    }
  });
  root.replaceChildren(h("main", { class: "login" }, form));
  setMode("login");
  input.focus();
}

/** A card alone in the middle of the page: for who-are-you and cannot-connect moments. */
function showMessage(mode, title, text, ...extra) {
  root.replaceChildren(
    h(
      "main",
      { class: "login" },
      h("div", { class: "card login-card" }, logo(), h("h1", null, title), h("p", { class: "muted" }, text), extra),
    ),
  );
  setMode(mode);
}

function showNoUser(info) {
  const text =
    info.auth_mode === "header"
      ? "This server takes your name from its single sign-on proxy, and this request came without one. Open the page through the proxy."
      : "This server could not tell who you are.";
  showMessage("no-user", "Who are you?", text);
}

// --- the app --------------------------------------------------------------------------------------------------

let started = null;

function start(info) {
  if (!info.user) {
    if (info.auth_mode === "token") showLogin();
    else showNoUser(info);
    return;
  }
  started?.client.close();
  const user = info.user;
  const toasts = started?.toasts ?? new Toasts();
  const notifier = new BrowserNotifier();
  const store = new JobStore({ user: user.name });

  const openReport = (id) => {
    location.hash = `report/${Number(id)}`;
  };
  const runDialog = (path, previous = null) =>
    openRunDialog(path, {
      previous,
      toasts,
      onSubmitted: (job) => {
        store.merge(job);
        store.schedulePositions();
        panel.highlight(job.id);
      },
      onSchedule: (run) => openScheduleDialog(run, { toasts, onCreated: (schedule) => schedules.upsert(schedule) }),
    });
  const files = new FileBrowser({
    user,
    toasts,
    onRun: (path) => runDialog(path),
    onReports: async (path) => {
      try {
        const answer = await api.get("api/reports", { notebook: path, limit: 1 });
        if (answer.reports.length) openReport(answer.reports[0].job);
        else toasts.show({ kind: "info", title: `No reports of ${baseName(path)} yet`, body: "Run it to make one." });
      } catch (error) {
        toasts.show({ kind: "error", title: "Could not read the reports", body: error.message });
      }
    },
  });
  const panel = new JobsPanel(store, {
    onViewReport: openReport,
    onRunAgain: (job) => runDialog(job.notebook, job),
    onError: (error) => toasts.show({ kind: "error", title: "That did not work", body: error.message }),
  });
  const schedules = new SchedulesPanel(store, { toasts, onViewReport: openReport });
  const viewer = new ReportViewer(store, {
    toasts,
    onOpen: openReport,
    onClose: () => {
      history.pushState(null, "", location.pathname + location.search);
      route();
    },
  });

  // Finished jobs: a toast (the error in red), and a browser notification while the tab is hidden.
  store.onFinished((job) => {
    const name = baseName(job.notebook);
    const ok = job.state === "succeeded";
    const title = `${name} ${(STATE_LABELS[job.state] ?? job.state).toLowerCase()}`;
    const body = ok
      ? `Job #${job.id} · took ${formatDuration(job.duration_s)}`
      : `Job #${job.id} · ${describeError(job.error) || job.state}`;
    const kind = ok ? "success" : job.state === "cancelled" ? "info" : "error";
    const actions = job.report_url ? [{ label: "View report", primary: true, onClick: () => openReport(job.id) }] : [];
    toasts.show({ kind, title, body, actions, key: `job-${job.id}`, timeoutMs: ok || kind === "info" ? 10000 : 0 });
    notifier.notify(title, body, () => job.report_url && openReport(job.id), `nbrelay-job-${job.id}`);
  });

  // The push client: same origin, under the page's base URL (a proxy's sub-path included).
  const client = new NbrelayClient({ base: document.baseURI.replace(/[?#].*$/, "").replace(/\/+$/, "") });
  const pill = h(
    "span",
    { class: "conn", role: "status", dataset: { status: "connecting" } },
    h("span", { class: "conn-dot" }),
    h("span", { class: "conn-text" }),
  );
  let awaySince = null;
  const showStatus = (status) => {
    const noNetwork = status === "reconnecting" && navigator.onLine === false;
    const [text, title] = noNetwork ? NO_NETWORK_TEXT : (STATUS_TEXT[status] ?? [status, ""]);
    pill.dataset.status = status;
    pill.lastChild.textContent = text;
    pill.title = title;
    if (status === "reconnecting" && awaySince === null) awaySince = Date.now();
    if ((status === "live" || status === "fallback") && awaySince !== null) {
      const awayMs = Date.now() - awaySince;
      awaySince = null;
      if (awayMs >= AWAY_NOTICE_MS) {
        toasts.show({
          kind: "info",
          title: "Back online",
          body: `Reconnected after ${formatDuration(awayMs / 1000)}; everything that happened meanwhile is shown.`,
          key: "connection",
          timeoutMs: 5000,
        });
      }
    }
  };
  client.on("status", showStatus);
  window.addEventListener("online", () => showStatus(client.status)); // "Offline" → "Reconnecting…" until live
  // What running jobs printed while the page was not connected (before a reload; or gone with the history of a
  // stream we could not resume) comes back from their own streams. Later connects resume exactly: nothing lost.
  const fillTails = () => {
    const ids = store.awaitOutputHistory();
    if (ids.length) fillOutputs(store, ids);
  };
  let connectedBefore = false;
  client.on("snapshot", ({ jobs }) => {
    store.applySnapshot(jobs);
    if (!connectedBefore) fillTails();
    connectedBefore = true;
  });
  client.on("*", (event) => {
    if (event.type.startsWith("job.")) {
      store.apply(event);
      if (event.data?.steps) files.onJobFinished(event.data);
    } else if (event.type === "file.changed") files.onFileChanged(event.data ?? {});
    else if (event.type === "notice")
      toasts.show({ kind: "info", title: "Notice", body: String(event.data?.text ?? "") });
    else if (event.type === "delivery.attempted") notifications.onDeliveryEvent(event.data ?? {});
    else if (event.type.startsWith("schedule.")) schedules.onEvent(event);
  });
  // Files written beside the service (a copy over ssh, a notebook writing outputs) are told of by no event: the
  // folder is read again when the page comes back into view, as a file manager does.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") files.scheduleRefresh();
  });
  client.on("recovered", ({ recovered }) => {
    if (recovered) return;
    // The events we missed are gone from the server's history: read the state again instead.
    fillTails();
    store.load().catch(() => {});
    files.refresh();
    schedules.load();
  });
  // Other people's jobs (an admin sees them) are followed on their own streams while they run.
  const followed = new Set();
  store.onChange((job) => {
    const stream = `job:${job.id}`;
    const others = job.owner && job.owner !== user.name;
    const unfinished = job.state === "queued" || job.state === "running";
    if (others && unfinished && !followed.has(stream)) {
      followed.add(stream);
      client.subscribe(stream);
    } else if (followed.has(stream) && !unfinished) {
      followed.delete(stream);
      client.unsubscribe(stream);
    }
  });
  client.on("error", ({ code }) => {
    if (code === 4500) showLogin("Your session ended. Sign in again.");
  });
  whenUnauthorized(() => {
    if (info.auth_mode === "token") {
      client.close();
      showLogin("Your session ended. Sign in again.");
    }
  });

  const bell = h(
    "button",
    { type: "button", class: "btn-icon", hidden: !notifier.supported, "aria-pressed": String(notifier.enabled) },
    icon(notifier.enabled ? "bell" : "bellOff"),
  );
  const syncBell = () => {
    bell.setAttribute("aria-pressed", String(notifier.enabled));
    bell.replaceChildren(icon(notifier.enabled ? "bell" : "bellOff"));
    bell.title = notifier.enabled
      ? "Browser notifications are on while this tab is hidden (click to turn off)"
      : "Notify me in the browser when a job finishes while this tab is hidden";
    bell.setAttribute("aria-label", bell.title);
  };
  bell.addEventListener("click", async () => {
    const on = await notifier.toggle();
    syncBell();
    if (!on && Notification.permission === "denied") {
      toasts.show({
        kind: "warning",
        title: "Notifications are blocked",
        body: "Allow them for this site in the browser's settings.",
      });
    }
  });
  syncBell();

  // Webhooks and e-mail (webhooks.js): for the people who are not on this page when a job ends.
  const notifications = new NotificationsPanel({ toasts });
  const notifyButton = h(
    "button",
    { type: "button", class: "btn btn-small btn-quiet", title: "Webhooks and e-mail when your jobs end" },
    "Notifications",
  );
  notifyButton.addEventListener("click", () => notifications.open());

  const logout =
    info.auth_mode === "token"
      ? h(
          "button",
          {
            type: "button",
            class: "btn-icon",
            title: "Sign out",
            "aria-label": "Sign out",
            onclick: async () => {
              client.close();
              await api.delete("api/session").catch(() => {});
              location.hash = "";
              location.reload();
            },
          },
          icon("logout"),
        )
      : null;

  const grid = h("div", { class: "workspace" }, files.el, h("div", { class: "side-column" }, panel.el, schedules.el));
  root.replaceChildren(
    h(
      "header",
      { class: "topbar" },
      logo(),
      h(
        "div",
        { class: "topbar-right" },
        pill,
        notifyButton,
        bell,
        h(
          "span",
          { class: "user", title: user.admin ? `${user.name} (admin)` : user.name },
          h("span", { class: "avatar" }, user.name.slice(0, 1).toUpperCase()),
          h("span", { class: "user-name" }, user.name),
        ),
        logout,
      ),
    ),
    h("main", { class: "main" }, grid, viewer.el),
  );

  let routed = null;
  const route = () => {
    const match = /^#report\/(\d+)$/.exec(location.hash);
    const target = match ? Number(match[1]) : null;
    if (target === routed) return; // hashchange and popstate both report one move through the history
    routed = target;
    if (target !== null) {
      grid.hidden = true;
      viewer.show(target);
    } else {
      viewer.close();
      grid.hidden = false;
    }
  };
  // A hash link fires hashchange; going back to an entry made by pushState (the viewer's Back) only popstate.
  window.onhashchange = route;
  window.onpopstate = route;

  showStatus(client.status === "closed" ? "connecting" : client.status);
  client.connect();
  files.open(files.folder);
  store.load().catch((error) => toasts.show({ kind: "error", title: "Could not read the jobs", body: error.message }));
  schedules.load();
  route();
  started = { client, store, toasts };
  window.nbrelayPage = { client, store, files, viewer, schedules };
  setMode("app");
}

async function boot() {
  try {
    start(await api.get("api/page"));
  } catch (error) {
    const retry = h(
      "button",
      { type: "button", class: "btn btn-primary", onclick: () => location.reload() },
      "Try again",
    );
    showMessage("error", "The server cannot be reached", error.message, retry);
  }
}

boot();
