// DOM building and formatting for the page. Every piece of text goes in as a text node (never as HTML), so
// file names, parameters and notebook output can hold anything without becoming markup.

import { serverNow } from "./clock.js";
import { stringifyJson } from "./json.js";

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "open", "selected", "indeterminate"]);

/** h("button", {class: "btn", onclick}, "Run") → an element; children may be nodes, strings, arrays or null. */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child == null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// Icons: 24×24 stroke paths, drawn as SVG elements (no markup strings).
const ICONS = {
  folder: "M3 7.5A2.5 2.5 0 0 1 5.5 5H9l2 2h7.5A2.5 2.5 0 0 1 21 9.5v8a2.5 2.5 0 0 1-2.5 2.5h-13A2.5 2.5 0 0 1 3 17.5z",
  notebook: "M6 3h8.5L19 7.5V21H6z M14 3v5h5 M9 12.5h6 M9 16h4",
  file: "M6 3h8.5L19 7.5V21H6z M14 3v5h5",
  upload: "M12 15V4 M7.5 8.5 12 4l4.5 4.5 M4 15v3.5A2.5 2.5 0 0 0 6.5 21h11a2.5 2.5 0 0 0 2.5-2.5V15",
  folderPlus:
    "M3 7.5A2.5 2.5 0 0 1 5.5 5H9l2 2h7.5A2.5 2.5 0 0 1 21 9.5v8a2.5 2.5 0 0 1-2.5 2.5h-13A2.5 2.5 0 0 1 3 17.5z M12 10.5v6 M9 13.5h6",
  play: "M7 4.5v15l12.5-7.5z",
  history: "M3.5 12a8.5 8.5 0 1 0 2.5-6 M3 4v4.5h4.5 M12 7.5V12l3 2",
  more: "M5 12h.01 M12 12h.01 M19 12h.01",
  trash: "M4 7h16 M9.5 7V4.5h5V7 M6 7l1 13h10l1-13 M10 11v5.5 M14 11v5.5",
  pencil: "M4 20h4L19.5 8.5a2.1 2.1 0 0 0-3-3L5 17z M14.5 7.5l3 3",
  copy: "M9 9h11v11H9z M15 9V4H4v11h5",
  download: "M12 4v11 M7.5 10.5 12 15l4.5-4.5 M4 15v3.5A2.5 2.5 0 0 0 6.5 21h11a2.5 2.5 0 0 0 2.5-2.5V15",
  x: "M6 6l12 12 M18 6 6 18",
  check: "M5 12.5l4.5 4.5L19 7.5",
  alert: "M12 3.5 2.5 20h19z M12 10v4.5 M12 17.5h.01",
  info: "M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z M12 11v5.5 M12 7.5h.01",
  bell: "M6 16.5V11a6 6 0 0 1 12 0v5.5l1.5 1.5h-15z M10 20.5a2 2 0 0 0 4 0",
  bellOff: "M6 16.5V11a6 6 0 0 1 10-4.5 M18 11v5.5l1.5 1.5H8 M10 20.5a2 2 0 0 0 4 0 M4 4l16 16",
  logout: "M10 4H6a2 2 0 0 0-2 2v12a2 2 0 0 0 2 2h4 M15 8l4 4-4 4 M19 12H9",
  chevron: "M9.5 6l6 6-6 6",
  back: "M14.5 6l-6 6 6 6",
  home: "M4 11 12 4l8 7 M6 9.5V20h12V9.5",
  external: "M14 4h6v6 M20 4l-9 9 M18 14v5a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1h5",
  stop: "M7 7h10v10H7z",
  refresh: "M20 12a8 8 0 1 1-2.34-5.66 M20 4.5V9h-4.5",
  clock: "M12 21a9 9 0 1 0 0-18 9 9 0 0 0 0 18z M12 7.5V12l3 2",
  plus: "M12 5v14 M5 12h14",
  logo: "M5 5.5h9.5L19 10v8.5H5z M8.5 13.5l2.5 2.5 4.5-5",
};

const SVG = "http://www.w3.org/2000/svg";

export function icon(name, className = "icon") {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("class", className);
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS(SVG, "path");
  path.setAttribute("d", ICONS[name] ?? ICONS.file);
  if (name === "play") path.setAttribute("class", "filled");
  if (name === "more") path.setAttribute("class", "dots");
  svg.append(path);
  return svg;
}

// --- formatting -----------------------------------------------------------------------------------------------

/** 75 → "1:15", 3725 → "1:02:05", 4.2 → "4.2 s" (short runs keep their tenths). */
export function formatDuration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return "";
  const s = Math.max(0, seconds);
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const total = Math.round(s);
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const secs = String(total % 60).padStart(2, "0");
  return hours ? `${hours}:${String(minutes).padStart(2, "0")}:${secs}` : `${minutes}:${secs}`;
}

export function formatBytes(size) {
  if (size == null) return "";
  if (size < 1024) return `${size} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = size / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

const RELATIVE = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** An ISO time as "3 min ago" (recent) or a short date; now is the server's, as the time given is. */
export function formatWhen(iso, now = serverNow()) {
  const at = Date.parse(iso);
  if (!Number.isFinite(at)) return "";
  const seconds = Math.round((at - now) / 1000);
  const abs = Math.abs(seconds);
  if (abs < 45) return "just now";
  if (abs < 3600) return RELATIVE.format(Math.round(seconds / 60), "minute");
  if (abs < 86400) return RELATIVE.format(Math.round(seconds / 3600), "hour");
  if (abs < 7 * 86400) return RELATIVE.format(Math.round(seconds / 86400), "day");
  return new Date(at).toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
}

export function formatFullTime(iso) {
  const at = Date.parse(iso);
  return Number.isFinite(at) ? new Date(at).toLocaleString() : "";
}

/** {name: "Ada", count: 2} → "name=Ada · count=2" (values as JSON, strings bare). */
export function formatParameters(parameters) {
  const entries = Object.entries(parameters ?? {});
  return entries.map(([k, v]) => `${k}=${typeof v === "string" ? v : stringifyJson(v)}`).join(" · ");
}

/** "reports/daily.ipynb" → "daily.ipynb"; "" → "". */
export function baseName(path) {
  return String(path ?? "")
    .split("/")
    .pop();
}

export function parentPath(path) {
  const parts = String(path ?? "").split("/");
  parts.pop();
  return parts.join("/");
}

export function joinPath(folder, name) {
  return folder ? `${folder}/${name}` : name;
}

export const STATE_LABELS = {
  queued: "Queued",
  running: "Running",
  succeeded: "Succeeded",
  failed: "Failed",
  cancelled: "Cancelled",
  timed_out: "Timed out",
};

export function stateBadge(state) {
  return h("span", { class: `badge state-${state}`, dataset: { state } }, STATE_LABELS[state] ?? state);
}

/** The one-line reason a job did not succeed: "ZeroDivisionError: division by zero (cell 3)", or the server's
 * reason ("interrupted: server stopped", "cancelled by request") when no cell raised. Cells are numbered as the
 * report numbers them: the n-th code cell that runs is cell n, In [n]. */
export function describeError(error) {
  if (!error) return "";
  const reason = error.reason || "";
  if (error.ename && reason.includes(error.ename)) {
    const text = error.evalue ? `${error.ename}: ${error.evalue}` : error.ename;
    return error.cell != null ? `${text} (cell ${error.cell})` : text;
  }
  return reason || error.ename || "failed";
}

/** What a running job is doing: "Starting the kernel…", "Cell 3 of 40" (the cell running, counted from 1),
 * "Writing the report…". `progress` is the job's: cells done, total, phase. */
export function runningText(progress) {
  const { cell = 0, total = 0, phase = null } = progress ?? {};
  if (phase === "starting_kernel" || !total) return "Starting the kernel…";
  if (phase === "writing_report" || cell >= total) return "Writing the report…";
  return `Cell ${cell + 1} of ${total}`;
}

/** The progress bar's label for screen readers: "starting the kernel", or "3 of 40 cells done". */
export function progressLabel(state, progress, done) {
  const { total = 0 } = progress ?? {};
  if (state === "running" && !total) return "starting the kernel";
  return `${done} of ${total} cells done`;
}
