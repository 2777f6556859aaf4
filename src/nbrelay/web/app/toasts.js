// Toasts (in the page) and browser notifications (when the tab is hidden and the user turned them on).

import { h, icon } from "./dom.js";

const KIND_ICONS = { success: "check", error: "alert", warning: "alert", info: "info" };
const MAX_TOASTS = 5;

export class Toasts {
  constructor() {
    this.region = h("section", { class: "toasts", "aria-live": "polite", "aria-label": "Notifications" });
    document.body.append(this.region);
    this.byKey = new Map();
  }

  /**
   * show({kind, title, body, actions: [{label, onClick, primary}], key, timeoutMs}) → {close}.
   * timeoutMs 0 keeps it until closed. The countdown runs only while the tab is visible and the toast is not
   * hovered or focused: a result that arrives while you are away is still there when you come back.
   */
  show({ kind = "info", title, body = null, actions = [], key = null, timeoutMs = 6000 }) {
    if (key && this.byKey.has(key)) this.byKey.get(key).close();
    const close = () => {
      clearInterval(timer);
      if (!toast.isConnected) return;
      toast.remove();
      if (key && this.byKey.get(key)?.toast === toast) this.byKey.delete(key);
    };
    const buttons = actions.map((action) =>
      h(
        "button",
        {
          type: "button",
          class: action.primary ? "btn btn-small btn-primary" : "btn btn-small",
          onclick: () => {
            close();
            action.onClick();
          },
        },
        action.label,
      ),
    );
    const text = body ? h("p", { class: "toast-body" }, body) : null;
    const more = text
      ? h("button", { type: "button", class: "toast-more", hidden: true, "aria-expanded": "false" }, "Show all")
      : null;
    more?.addEventListener("click", () => {
      const expanded = toast.classList.toggle("expanded");
      more.setAttribute("aria-expanded", String(expanded));
      more.textContent = expanded ? "Show less" : "Show all";
    });
    const toast = h(
      "div",
      { class: `toast toast-${kind}`, role: kind === "error" ? "alert" : "status", dataset: { kind } },
      h("span", { class: "toast-icon" }, icon(KIND_ICONS[kind] ?? "info")),
      h(
        "div",
        { class: "toast-main" },
        h("p", { class: "toast-title" }, title),
        text,
        more,
        buttons.length ? h("div", { class: "toast-actions" }, buttons) : null,
      ),
      h(
        "button",
        { type: "button", class: "btn-icon toast-close", "aria-label": "Dismiss", onclick: close },
        icon("x"),
      ),
    );
    let remainingMs = timeoutMs;
    let held = false;
    const hold = (value) => () => (held = value);
    toast.addEventListener("pointerenter", hold(true));
    toast.addEventListener("pointerleave", hold(false));
    toast.addEventListener("focusin", hold(true));
    toast.addEventListener("focusout", hold(false));
    const timer =
      timeoutMs > 0
        ? setInterval(() => {
            if (!toast.isConnected) close(); // pushed out by newer toasts
            if (held || document.hidden) return;
            remainingMs -= 250;
            if (remainingMs <= 0) close();
          }, 250)
        : null;
    this.region.append(toast);
    // A long body (an exception's message) is cut to a few lines, so that the toast's buttons stay on screen.
    if (text && text.scrollHeight > text.clientHeight + 1) more.hidden = false;
    while (this.region.children.length > MAX_TOASTS) this.region.firstElementChild.remove();
    if (key) this.byKey.set(key, { toast, close });
    return { close, element: toast };
  }
}

const NOTIFY_KEY = "nbrelay.notifications";

/** The browser's Notification API, used only while the tab is hidden and only when the user asked for it. */
export class BrowserNotifier {
  get supported() {
    return typeof Notification !== "undefined";
  }

  get enabled() {
    return this.supported && Notification.permission === "granted" && localStorage.getItem(NOTIFY_KEY) === "on";
  }

  /** Turn notifications on (asking the browser's permission once) or off; resolves with the new state. */
  async toggle() {
    if (!this.supported) return false;
    if (this.enabled) {
      localStorage.setItem(NOTIFY_KEY, "off");
      return false;
    }
    const permission =
      Notification.permission === "default" ? await Notification.requestPermission() : Notification.permission;
    localStorage.setItem(NOTIFY_KEY, permission === "granted" ? "on" : "off");
    return permission === "granted";
  }

  notify(title, body, onClick, tag) {
    if (!this.enabled || !document.hidden) return null;
    try {
      const notification = new Notification(title, { body, tag });
      notification.onclick = () => {
        window.focus();
        notification.close();
        onClick?.();
      };
      return notification;
    } catch {
      return null; // some browsers allow notifications only from a service worker
    }
  }
}
