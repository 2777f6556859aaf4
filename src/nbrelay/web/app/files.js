// The notebook browser: folders and files of the workspace (the contents API), upload by button or by
// dropping files, new folder, rename, copy, delete; kept current by `file.changed` push events.

import { api, urls } from "./api.js";
import { confirmDialog, openMenu, promptDialog } from "./dialogs.js";
import { baseName, fill, formatBytes, formatFullTime, formatWhen, h, icon, joinPath, parentPath } from "./dom.js";

const FOLDER_KEY = "nbrelay.folder";

function byKindThenName(a, b) {
  const folder = (entry) => (entry.type === "directory" ? 0 : 1);
  return folder(a) - folder(b) || a.name.localeCompare(b.name, undefined, { numeric: true, sensitivity: "base" });
}

function hasFiles(event) {
  return [...(event.dataTransfer?.types ?? [])].includes("Files");
}

export class FileBrowser {
  /**
   * user: {name, admin, home, areas} from /api/page; handlers: onRun(path), onReports(path), toasts.
   */
  constructor({ user, toasts, onRun, onReports }) {
    this.user = user;
    this.toasts = toasts;
    this.onRun = onRun;
    this.onReports = onReports;
    this.entries = [];
    this.folder = sessionStorage.getItem(FOLDER_KEY) ?? user.home ?? "";
    this.target = null; // the folder being opened, until it is
    this._refreshTimer = null;
    this._loading = 0;

    this.input = h("input", { type: "file", multiple: true, hidden: true, "data-testid": "upload-input" });
    this.input.addEventListener("change", () => {
      const files = [...this.input.files];
      this.input.value = "";
      this.upload(files);
    });
    this.uploadButton = h(
      "button",
      { type: "button", class: "btn btn-small", onclick: () => this.input.click() },
      icon("upload"),
      "Upload",
    );
    this.folderButton = h(
      "button",
      { type: "button", class: "btn btn-small", onclick: () => this.newFolder() },
      icon("folderPlus"),
      "New folder",
    );
    this.crumbs = h("nav", { class: "crumbs", "aria-label": "Folder" });
    this.list = h("div", { class: "file-list", role: "list", "aria-label": "Files" });
    this.uploads = h("div", { class: "uploads", "aria-live": "polite" });
    this.dropHint = h(
      "div",
      { class: "drop-hint", "aria-hidden": "true" },
      icon("upload", "icon drop-icon"),
      h("p", { class: "drop-text" }),
    );
    this.el = h(
      "section",
      { class: "card files-card", "aria-labelledby": "files-title" },
      h(
        "header",
        { class: "card-head" },
        h("h2", { id: "files-title" }, "Notebooks"),
        h("div", { class: "toolbar" }, this.uploadButton, this.folderButton, this.input),
      ),
      this.crumbs,
      h("div", { class: "card-body files-body" }, this.uploads, this.list),
      this.dropHint,
    );
    this._listenForDrops();
  }

  /** Whether the user may add files in `folder` (their home and the shared folder, or anywhere). */
  canAdd(folder) {
    const areas = this.user.areas;
    if (!areas) return true;
    return areas.some((area) => folder === area || folder.startsWith(`${area}/`));
  }

  async open(folder) {
    const ticket = ++this._loading;
    this.target = folder; // where we are going: a refresh meanwhile must not take us back
    let model;
    try {
      model = await api.get(urls.contents(folder));
    } catch (error) {
      if (ticket !== this._loading) return;
      if (error.status === 404 && folder) {
        this.open(this.user.home && folder !== this.user.home ? this.user.home : parentPath(folder));
        return;
      }
      this.target = this.folder; // stay where we were
      this.toasts.show({ kind: "error", title: "Could not open the folder", body: error.message });
      return;
    }
    if (ticket !== this._loading) return; // a later navigation won
    if (model.type !== "directory") {
      this.open(parentPath(folder));
      return;
    }
    this.folder = model.path;
    sessionStorage.setItem(FOLDER_KEY, this.folder);
    this.entries = [...model.content].sort(byKindThenName);
    this.render();
  }

  refresh() {
    return this.open(this.target ?? this.folder);
  }

  /** A file.changed event: reload when it happened in the folder on screen (at any depth: a new sub-folder may
   * appear) or to a folder it is in. */
  onFileChanged(data) {
    const here = this.folder;
    const inside = (path) => here === "" || path === here || path.startsWith(`${here}/`) || here.startsWith(`${path}/`);
    if ([data.path, data.from].some((path) => typeof path === "string" && inside(path))) this.scheduleRefresh();
  }

  /** Post-run steps write files without file.changed events: a job whose steps touched files reloads the list. */
  onJobFinished(data) {
    if ((data.steps ?? []).some((step) => step?.files?.length)) this.scheduleRefresh();
  }

  scheduleRefresh() {
    clearTimeout(this._refreshTimer);
    this._refreshTimer = setTimeout(() => this.refresh(), 120);
  }

  // --- rendering ----------------------------------------------------------------------------------------------

  render() {
    const parts = this.folder ? this.folder.split("/") : [];
    const crumb = (label, path, current) =>
      current
        ? h("span", { class: "crumb current", "aria-current": "page" }, label)
        : h("button", { type: "button", class: "crumb", onclick: () => this.open(path) }, label);
    fill(
      this.crumbs,
      crumb([icon("home"), h("span", null, "Workspace")], "", parts.length === 0),
      parts.map((part, i) => [
        icon("chevron", "icon crumb-sep"),
        crumb(part, parts.slice(0, i + 1).join("/"), i === parts.length - 1),
      ]),
    );
    const writable = this.canAdd(this.folder);
    for (const button of [this.uploadButton, this.folderButton]) {
      button.disabled = !writable;
      button.title = writable ? "" : this.notHereMessage();
    }
    if (!this.entries.length) {
      fill(
        this.list,
        h(
          "div",
          { class: "empty" },
          icon("folder", "icon empty-icon"),
          h("p", null, "This folder is empty"),
          h("p", { class: "muted" }, writable ? "Drop notebooks here, or use Upload." : this.notHereMessage()),
        ),
      );
      return;
    }
    fill(
      this.list,
      this.entries.map((entry) => this.row(entry)),
    );
  }

  notHereMessage() {
    const areas = this.user.areas ?? [];
    return `You can add files in ${areas.join(" and ")}.`;
  }

  row(entry) {
    const kind = entry.type;
    const open = () => {
      if (kind === "directory") this.open(entry.path);
      else if (kind === "notebook") this.onRun(entry.path);
      else this.download(entry);
    };
    const meta = [
      kind === "directory" ? "Folder" : formatBytes(entry.size),
      entry.last_modified ? formatWhen(entry.last_modified) : "",
    ].filter(Boolean);
    const actions = [];
    if (kind === "notebook") {
      actions.push(
        h(
          "button",
          {
            type: "button",
            class: "btn btn-small btn-run",
            dataset: { action: "run" },
            onclick: () => this.onRun(entry.path),
          },
          icon("play"),
          "Run",
        ),
        h(
          "button",
          {
            type: "button",
            class: "btn-icon",
            title: "Reports",
            "aria-label": `Reports of ${entry.name}`,
            dataset: { action: "reports" },
            onclick: () => this.onReports(entry.path),
          },
          icon("history"),
        ),
      );
    }
    const more = h(
      "button",
      {
        type: "button",
        class: "btn-icon",
        title: "More",
        "aria-label": `More actions for ${entry.name}`,
        "aria-haspopup": "menu",
        "aria-expanded": "false",
        dataset: { action: "more" },
      },
      icon("more"),
    );
    more.addEventListener("click", () => openMenu(more, this.menuItems(entry)));
    actions.push(more);
    return h(
      "div",
      { class: `file-row file-${kind}`, role: "listitem", dataset: { path: entry.path, type: kind } },
      h(
        "button",
        { type: "button", class: "file-open", onclick: open, title: entry.path },
        icon(kind === "directory" ? "folder" : kind === "notebook" ? "notebook" : "file", `icon file-icon ${kind}`),
        h("span", { class: "file-name" }, entry.name),
      ),
      h("span", { class: "file-meta", title: formatFullTime(entry.last_modified) }, meta.join(" · ")),
      h("div", { class: "file-actions" }, actions),
    );
  }

  menuItems(entry) {
    const items = [];
    if (entry.writable) items.push({ label: "Rename", icon: "pencil", onSelect: () => this.rename(entry) });
    if (entry.type !== "directory") {
      if (this.canAdd(this.folder))
        items.push({ label: "Make a copy", icon: "copy", onSelect: () => this.copy(entry) });
      items.push({ label: "Download", icon: "download", onSelect: () => this.download(entry) });
    }
    if (entry.writable)
      items.push({ label: "Delete", icon: "trash", danger: true, onSelect: () => this.remove(entry) });
    return items;
  }

  // --- actions ------------------------------------------------------------------------------------------------

  async upload(files) {
    const folder = this.target ?? this.folder; // the folder being opened, if the user just clicked one
    if (!files.length) return;
    if (!this.canAdd(folder)) {
      this.toasts.show({ kind: "error", title: "You can't add files here", body: this.notHereMessage() });
      return;
    }
    let done = 0;
    for (const file of files) {
      const path = joinPath(folder, file.name);
      const pending = h(
        "div",
        { class: "upload-row" },
        h("span", { class: "spinner", "aria-hidden": "true" }),
        h("span", null, `Uploading ${file.name}…`),
      );
      this.uploads.append(pending);
      try {
        await this.put(path, file, false);
        done += 1;
      } catch (error) {
        if (error.status === 409 && (await this.confirmReplace(file.name, folder))) {
          try {
            await this.put(path, file, true);
            done += 1;
          } catch (again) {
            this.failed(`Could not upload ${file.name}`, again);
          }
        } else if (error.status !== 409) {
          this.failed(`Could not upload ${file.name}`, error);
        }
      } finally {
        pending.remove();
      }
    }
    if (done) {
      const what = done === 1 ? files[0].name : `${done} files`;
      this.toasts.show({ kind: "success", title: `Uploaded ${what}`, body: folder ? `to ${folder}` : null });
    }
    if (this.folder === folder) this.refresh();
  }

  put(path, file, overwrite) {
    const form = new FormData();
    form.append("file", file, file.name);
    return api.put(urls.contents(path), form, overwrite ? { overwrite: "true" } : undefined);
  }

  confirmReplace(name, folder) {
    return confirmDialog({
      title: "Replace the file?",
      message: `${name} already exists in ${folder || "the workspace"}. Replace it with the one you are uploading?`,
      confirmLabel: "Replace",
      danger: true,
    });
  }

  async newFolder() {
    const folder = this.folder;
    const created = await promptDialog({
      title: "New folder",
      label: `Name of the new folder in ${folder || "the workspace"}`,
      value: "",
      confirmLabel: "Create",
      submit: (name) => api.post(urls.contents(folder), { type: "directory", name }),
    });
    if (created) this.refresh();
  }

  async rename(entry) {
    const folder = parentPath(entry.path);
    const isFile = entry.type !== "directory";
    let replacing = null; // the name the user was told is taken: renaming a file to it again replaces that file
    const renamed = await promptDialog({
      title: `Rename ${isFile ? "file" : "folder"}`,
      label: "New name",
      value: entry.name,
      confirmLabel: "Rename",
      selectStem: isFile,
      submit: async (name) => {
        if (name === entry.name) return null;
        const overwrite = isFile && name === replacing;
        try {
          return await api.patch(urls.contents(entry.path), { path: joinPath(folder, name), overwrite });
        } catch (error) {
          if (error.status !== 409 || error.code !== "exists") throw error;
          if (!isFile) throw new Error(`${name} already exists in ${folder || "the workspace"}.`);
          replacing = name;
          throw new Error(`${name} already exists in ${folder || "the workspace"}. Rename again to replace it.`);
        }
      },
    });
    if (renamed) this.refresh();
  }

  async copy(entry) {
    try {
      const copy = await api.post(urls.contents(this.folder), { copy_from: entry.path });
      this.toasts.show({ kind: "success", title: `Copied ${entry.name}`, body: `as ${baseName(copy.path)}` });
      this.refresh();
    } catch (error) {
      this.failed(`Could not copy ${entry.name}`, error);
    }
  }

  async remove(entry) {
    const folder = entry.type === "directory";
    const ok = await confirmDialog({
      title: folder ? "Delete folder?" : "Delete file?",
      message: folder
        ? `${entry.name} and everything in it will be deleted. This cannot be undone.`
        : `${entry.name} will be deleted. This cannot be undone.`,
      confirmLabel: "Delete",
      danger: true,
    });
    if (!ok) return;
    try {
      await api.delete(urls.contents(entry.path), folder ? { recursive: "true" } : undefined);
      this.refresh();
    } catch (error) {
      this.failed(`Could not delete ${entry.name}`, error);
    }
  }

  download(entry) {
    const link = h("a", { href: urls.download(entry.path), download: entry.name, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
  }

  failed(title, error) {
    this.toasts.show({ kind: "error", title, body: error.message, timeoutMs: 10000 });
  }

  // --- drag and drop ------------------------------------------------------------------------------------------

  _listenForDrops() {
    let depth = 0; // dragenter/dragleave fire for every child crossed: count them
    const reset = () => {
      depth = 0;
      this.el.classList.remove("dragging");
    };
    this.el.addEventListener("dragenter", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      depth += 1;
      const target = this.folder || "the workspace";
      this.dropHint.querySelector(".drop-text").textContent = this.canAdd(this.folder)
        ? `Drop to upload to ${target}`
        : this.notHereMessage();
      this.el.classList.add("dragging");
    });
    this.el.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = this.canAdd(this.folder) ? "copy" : "none";
    });
    this.el.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (depth === 0) reset();
    });
    this.el.addEventListener("drop", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      reset();
      this.upload([...event.dataTransfer.files]);
    });
    // A file dropped next to the list must not make the browser leave the page to show it.
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if (hasFiles(event) && !this.el.contains(event.target)) event.preventDefault();
      });
    }
  }
}
