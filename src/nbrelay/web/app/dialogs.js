// Modal dialogs (<dialog>), confirmations, prompts and the small action menus of the file list.

import { h, icon } from "./dom.js";

/**
 * A modal <dialog> with a title, a body and a footer of buttons; removed from the page when closed.
 * Returns {dialog, close}; `onClose` runs once whichever way it closes (Escape, ×, a button).
 */
export function modal({ title, body, footer, className = "", onClose, label }) {
  const closeButton = h("button", { type: "button", class: "btn-icon", "aria-label": "Close" }, icon("x"));
  const dialog = h(
    "dialog",
    { class: `modal ${className}`, "aria-label": label ?? title },
    h("header", { class: "modal-head" }, h("h2", null, title), closeButton),
    h("div", { class: "modal-body" }, body),
    footer ? h("footer", { class: "modal-foot" }, footer) : null,
  );
  let closed = false;
  const close = (value) => {
    if (closed) return;
    closed = true;
    if (dialog.open) dialog.close();
    dialog.remove();
    onClose?.(value);
  };
  closeButton.addEventListener("click", () => close(null));
  dialog.addEventListener("close", () => close(null));
  // A click on the backdrop (the dialog element itself, outside its box) closes it.
  dialog.addEventListener("mousedown", (event) => {
    if (event.target !== dialog) return;
    const box = dialog.getBoundingClientRect();
    const inside =
      event.clientX >= box.left &&
      event.clientX <= box.right &&
      event.clientY >= box.top &&
      event.clientY <= box.bottom;
    if (!inside) close(null);
  });
  document.body.append(dialog);
  dialog.showModal();
  return { dialog, close };
}

/** Ask yes or no; resolves true when confirmed. */
export function confirmDialog({ title, message, confirmLabel = "OK", danger = false }) {
  return new Promise((resolve) => {
    const ok = h("button", { type: "button", class: danger ? "btn btn-danger" : "btn btn-primary" }, confirmLabel);
    const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
    const { close } = modal({
      title,
      className: "modal-small",
      body: h("p", { class: "modal-message" }, message),
      footer: [cancel, ok],
      onClose: (value) => resolve(value === true),
    });
    ok.addEventListener("click", () => close(true));
    cancel.addEventListener("click", () => close(false));
    ok.focus();
  });
}

/**
 * Ask for a name. `submit(value)` does the work; when it throws (an ApiError, say) its message is shown under
 * the field and the dialog stays open. Resolves with submit's result, or null when cancelled.
 */
export function promptDialog({ title, label, value = "", confirmLabel = "OK", selectStem = false, submit }) {
  return new Promise((resolve) => {
    const input = h("input", { type: "text", class: "input", value, required: true, spellcheck: "false" });
    const error = h("p", { class: "field-error", role: "alert" });
    const ok = h("button", { type: "submit", class: "btn btn-primary" }, confirmLabel);
    const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
    const form = h(
      "form",
      { class: "prompt-form", novalidate: true },
      h("label", { class: "field" }, h("span", { class: "field-label" }, label), input, error),
    );
    const { dialog, close } = modal({
      title,
      className: "modal-small",
      body: form,
      footer: [cancel, ok],
      onClose: (result) => resolve(result ?? null),
    });
    ok.addEventListener("click", (event) => {
      event.preventDefault();
      form.requestSubmit();
    });
    cancel.addEventListener("click", () => close(null));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const text = input.value.trim();
      if (!text) {
        error.textContent = "Enter a name.";
        return;
      }
      ok.disabled = true;
      dialog.setAttribute("aria-busy", "true");
      try {
        const result = await submit(text);
        close(result ?? text);
      } catch (err) {
        error.textContent = err.message;
        ok.disabled = false;
        dialog.removeAttribute("aria-busy");
        input.focus();
      }
    });
    input.focus();
    const dot = value.lastIndexOf(".");
    if (selectStem && dot > 0) input.setSelectionRange(0, dot);
    else input.select();
  });
}

let openMenuState = null;

function closeMenu() {
  if (!openMenuState) return;
  const { menu, anchor, onKey, onPointer } = openMenuState;
  openMenuState = null;
  menu.remove();
  anchor.setAttribute("aria-expanded", "false");
  document.removeEventListener("keydown", onKey, true);
  document.removeEventListener("pointerdown", onPointer, true);
}

/** A small menu under `anchor`: items [{label, icon, danger, onSelect}]. */
export function openMenu(anchor, items) {
  const wasOpen = openMenuState?.anchor === anchor;
  closeMenu();
  if (wasOpen) return; // a second click on the same button closes it
  const buttons = items.map((item) =>
    h(
      "button",
      {
        type: "button",
        role: "menuitem",
        class: item.danger ? "menu-item danger" : "menu-item",
        onclick: () => {
          closeMenu();
          item.onSelect();
        },
      },
      icon(item.icon),
      item.label,
    ),
  );
  const menu = h("div", { class: "menu", role: "menu" }, buttons);
  document.body.append(menu);
  const box = anchor.getBoundingClientRect();
  const width = menu.offsetWidth;
  const top =
    box.bottom + 4 + menu.offsetHeight > window.innerHeight ? box.top - menu.offsetHeight - 4 : box.bottom + 4;
  menu.style.top = `${Math.max(4, top)}px`;
  menu.style.left = `${Math.max(4, Math.min(box.right - width, window.innerWidth - width - 4))}px`;
  anchor.setAttribute("aria-expanded", "true");
  const onKey = (event) => {
    if (event.key === "Escape") {
      closeMenu();
      anchor.focus();
    } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const index = buttons.indexOf(document.activeElement);
      const step = event.key === "ArrowDown" ? 1 : -1;
      buttons[(index + step + buttons.length) % buttons.length].focus();
    }
  };
  const onPointer = (event) => {
    if (!menu.contains(event.target) && !anchor.contains(event.target)) closeMenu();
  };
  openMenuState = { menu, anchor, onKey, onPointer };
  document.addEventListener("keydown", onKey, true);
  document.addEventListener("pointerdown", onPointer, true);
  buttons[0]?.focus();
}
