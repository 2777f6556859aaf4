// The run dialog: a form made from the notebook's declared parameters (types, defaults, help), timeouts and
// post-run steps. The API checks everything; its 422 answers are shown next to the fields they name.

import { api, urls } from "./api.js";
import { modal } from "./dialogs.js";
import { baseName, fill, h, icon } from "./dom.js";
import { exactInteger, parseJson, stringifyJson } from "./json.js";

const NUMBER = { int: /^[-+]?\d+$/, float: /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/ };

/** The kind of field for a parameter: the API reads its declared type (`kind`: int, float, bool, str, list, dict
 * or any, for `Optional[int]` and `int | None` alike); lists and objects are edited as JSON. */
export function fieldKind(parameter) {
  const kind = parameter.kind ?? "any";
  return kind === "list" || kind === "dict" ? "json" : kind;
}

/** A value as the text of its field: the text that parseValue reads back as that same value. */
export function initialText(kind, value) {
  if (value === null || value === undefined) return "";
  if (kind === "str") return typeof value === "string" ? value : stringifyJson(value);
  if (kind === "json") return stringifyJson(value);
  // Untyped: a string shows bare unless it would read as another value ("123", "true"): then quoted.
  if (kind === "any") return typeof value === "string" && readsAsText(value) ? value : stringifyJson(value);
  return String(value);
}

function readsAsText(text) {
  try {
    parseJson(text);
    return false;
  } catch (error) {
    return !(error instanceof RangeError);
  }
}

/** The text of a field as the JSON value to send; throws a message for text that cannot be one. */
export function parseValue(kind, text) {
  if (kind === "str") return text;
  const trimmed = text.trim();
  // A number when it reads as one; anything else goes as typed, and the API says what it expected.
  if (kind === "int") return NUMBER.int.test(trimmed) ? exactInteger(trimmed) : text;
  if (kind === "float") return NUMBER.float.test(trimmed) ? finiteNumber(trimmed) : text;
  try {
    return parseJson(text); // untyped: JSON when it is JSON (numbers, true, null, lists), else the text
  } catch (error) {
    if (error instanceof RangeError) throw new Error(`${error.message}: too large for a number`);
    if (kind === "json") throw new Error('not valid JSON (a list is written [1, 2], an object {"key": "value"})');
    return text;
  }
}

function finiteNumber(text) {
  const number = Number(text);
  if (!Number.isFinite(number)) throw new Error(`${text} is out of range: too large for a float`);
  return number;
}

class ParameterField {
  constructor(parameter, value) {
    this.name = parameter.name;
    this.kind = fieldKind(parameter);
    const hasDefault = parameter.default_value !== null && parameter.default_value !== undefined;
    const id = `param-${parameter.name}`;
    this.error = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
    if (this.kind === "bool") {
      this.initial = Boolean(parameter.default_value);
      this.input = h("input", {
        type: "checkbox",
        id,
        name: parameter.name,
        class: "switch",
        checked: value === undefined ? this.initial : Boolean(value),
      });
    } else {
      this.initial = hasDefault ? initialText(this.kind, parameter.default_value) : "";
      const text = value === undefined ? this.initial : initialText(this.kind, value);
      const attrs = {
        id,
        name: parameter.name,
        class: this.kind === "json" ? "input mono" : "input",
        spellcheck: "false",
        autocomplete: "off",
        placeholder: hasDefault ? "" : `default: ${parameter.default}`,
        "aria-describedby": `${id}-help ${id}-error`,
        value: text,
      };
      if (this.kind === "int") attrs.inputmode = "numeric";
      if (this.kind === "float") attrs.inputmode = "decimal";
      this.input = this.kind === "json" ? h("textarea", { ...attrs, rows: 2 }) : h("input", { ...attrs, type: "text" });
    }
    this.input.addEventListener("input", () => this.setError(""));
    const typeLabel = parameter.type && parameter.type !== "None" ? parameter.type : "any";
    const label = h(
      "label",
      { for: id, class: "field-label" },
      h("span", { class: "param-name" }, parameter.name),
      h("span", { class: "param-type" }, typeLabel),
    );
    const help = h(
      "p",
      { class: "field-help", id: `${id}-help` },
      parameter.help || "",
      parameter.help ? " · " : "",
      `default ${parameter.default}`,
    );
    this.el =
      this.kind === "bool"
        ? h(
            "div",
            { class: "field field-bool", dataset: { param: parameter.name } },
            h("div", { class: "field-row" }, this.input, label),
            help,
            this.error,
          )
        : h("div", { class: "field", dataset: { param: parameter.name } }, label, this.input, help, this.error);
  }

  /** [changed?, value]: only values that differ from the notebook's default are sent (the rest stay as written). */
  read() {
    if (this.kind === "bool") return [this.input.checked !== this.initial, this.input.checked];
    const text = this.input.value;
    if (text === this.initial) return [false, undefined];
    if (text.trim() === "" && this.kind !== "str") return [false, undefined];
    return [true, parseValue(this.kind, text)];
  }

  setError(message) {
    this.error.textContent = message;
    this.el.classList.toggle("invalid", Boolean(message));
    this.input.setAttribute("aria-invalid", message ? "true" : "false");
  }
}

const STEP_ACTIONS = ["copy", "move", "delete"];

class StepsEditor {
  constructor(defaults) {
    this.dirty = false;
    this.rows = [];
    this.list = h("div", { class: "steps-list" });
    this.error = h("p", { class: "field-error", role: "alert" });
    this.note = h("p", { class: "field-help" });
    this.el = h(
      "div",
      { class: "steps", dataset: { field: "steps" } },
      this.note,
      this.list,
      h(
        "button",
        {
          type: "button",
          class: "btn btn-small",
          onclick: () => {
            this.add({ action: "copy", source: "report", to: "", when: "success" });
            this.changed();
          },
        },
        icon("plus"),
        "Add step",
      ),
      this.error,
      h("datalist", { id: "step-sources" }, h("option", { value: "report" }), h("option", { value: "notebook" })),
    );
    for (const step of Array.isArray(defaults) ? defaults : []) if (step && typeof step === "object") this.add(step);
    this.note.textContent = this.rows.length
      ? "The notebook's default steps. Change them for this run, or remove them all."
      : "Copy, move or delete files when the job ends, e.g. publish the report to publish/{notebook}-{date}.html.";
  }

  add(step) {
    const action = h(
      "select",
      { class: "input", "aria-label": "Action" },
      STEP_ACTIONS.map((a) => h("option", { value: a, selected: a === step.action }, a)),
    );
    const source = h("input", {
      type: "text",
      class: "input",
      list: "step-sources",
      "aria-label": "Source",
      placeholder: "report, notebook or a glob",
      value: step.source ?? "",
    });
    const to = h("input", {
      type: "text",
      class: "input",
      "aria-label": "Destination",
      placeholder: "to: publish/{notebook}-{date}.html",
      value: step.to ?? "",
    });
    const when = h(
      "select",
      { class: "input", "aria-label": "When" },
      h("option", { value: "success", selected: step.when !== "always" }, "on success"),
      h("option", { value: "always", selected: step.when === "always" }, "always"),
    );
    const overwrite = h("input", { type: "checkbox", checked: Boolean(step.overwrite) });
    const error = h("p", { class: "field-error", role: "alert" });
    const row = {
      read: () => {
        const value = { action: action.value, source: source.value.trim(), when: when.value };
        if (action.value !== "delete") {
          value.to = to.value.trim();
          if (overwrite.checked) value.overwrite = true;
        }
        return value;
      },
      error,
    };
    const sync = () => {
      const deleting = action.value === "delete";
      to.disabled = deleting;
      overwrite.disabled = deleting;
    };
    const remove = h(
      "button",
      {
        type: "button",
        class: "btn-icon",
        "aria-label": "Remove step",
        onclick: () => {
          this.rows.splice(this.rows.indexOf(row), 1);
          row.el.remove();
          this.changed();
        },
      },
      icon("trash"),
    );
    row.el = h(
      "div",
      { class: "step-row" },
      h(
        "div",
        { class: "step-fields" },
        action,
        source,
        to,
        when,
        h("label", { class: "step-overwrite" }, overwrite, "overwrite"),
        remove,
      ),
      error,
    );
    for (const input of [action, source, to, when, overwrite]) input.addEventListener("input", () => this.changed());
    action.addEventListener("change", sync);
    sync();
    this.rows.push(row);
    this.list.append(row.el);
  }

  changed() {
    this.dirty = true;
    this.setError("");
  }

  /** The steps to send, or undefined to let the notebook's defaults apply. */
  read() {
    return this.dirty ? this.rows.map((row) => row.read()) : undefined;
  }

  /** "steps[1]: …" goes under that step; anything else under the list. */
  setError(message) {
    for (const row of this.rows) row.error.textContent = "";
    const match = /^steps\[(\d+)\]/.exec(message);
    const row = match ? this.rows[Number(match[1])] : null;
    if (row) row.error.textContent = message;
    this.error.textContent = row ? "" : message;
  }
}

function timeoutField(name, label, help, value) {
  const input = h("input", {
    type: "text",
    inputmode: "decimal",
    class: "input",
    id: `run-${name}`,
    name,
    placeholder: "none",
    value: value == null ? "" : String(value),
  });
  const error = h("p", { class: "field-error", role: "alert" });
  const el = h(
    "div",
    { class: "field", dataset: { field: name } },
    h("label", { for: `run-${name}`, class: "field-label" }, label),
    input,
    h("p", { class: "field-help" }, help),
    error,
  );
  input.addEventListener("input", () => {
    error.textContent = "";
    el.classList.remove("invalid");
  });
  return {
    el,
    read: () => {
      const text = input.value.trim();
      if (!text) return undefined;
      return NUMBER.float.test(text) ? Number(text) : text;
    },
    setError: (message) => {
      error.textContent = message;
      el.classList.toggle("invalid", Boolean(message));
    },
  };
}

/**
 * Open the run dialog for `notebook`. `previous` (a job) fills the form with that job's values ("run again").
 * onSubmitted(job) gets the 202 answer. With onSchedule(body), a "Schedule…" button hands the form's values (as
 * POST /api/jobs would take them) to it instead of running.
 */
export async function openRunDialog(notebook, { previous = null, onSubmitted, onSchedule = null, toasts }) {
  let info;
  try {
    info = await api.get(urls.parameters(notebook));
  } catch (error) {
    toasts.show({ kind: "error", title: `Cannot run ${baseName(notebook)}`, body: error.message, timeoutMs: 10000 });
    return;
  }
  const values = previous?.parameters ?? {};
  const fields = info.parameters.map((p) => new ParameterField(p, values[p.name]));
  const banner = h("div", { class: "form-error", role: "alert", hidden: true });
  let rawParameters = null; // for languages whose parameters cannot be read: one JSON object
  let paramsBody;
  if (!info.inspectable) {
    rawParameters = h("textarea", {
      class: "input mono",
      rows: 4,
      "aria-label": "Parameters as JSON",
      value: stringifyJson(values, 1),
    });
    paramsBody = [
      h("p", { class: "muted" }, `Parameters of ${info.language} notebooks can't be read: give them as a JSON object.`),
      rawParameters,
    ];
  } else if (!fields.length) {
    paramsBody = h(
      "p",
      { class: "muted no-params" },
      "This notebook declares no parameters. Tag a cell ",
      h("code", null, "parameters"),
      " to make some.",
    );
  } else {
    paramsBody = fields.map((f) => f.el);
  }
  const timeout = timeoutField(
    "timeout_s",
    "Job timeout (s)",
    "Stop the whole run after this long.",
    previous?.timeout_s,
  );
  const cellTimeout = timeoutField(
    "cell_timeout_s",
    "Cell timeout (s)",
    "Stop when one cell runs longer than this.",
    previous?.cell_timeout_s,
  );
  const steps = new StepsEditor(previous?.steps ?? info.default_steps);
  if (previous?.steps) steps.dirty = true;
  const advanced = h(
    "details",
    { class: "advanced", open: Boolean(previous?.timeout_s || previous?.cell_timeout_s) },
    h("summary", null, "Timeouts and post-run steps"),
    h("div", { class: "timeouts" }, timeout.el, cellTimeout.el),
    h("h3", { class: "subhead" }, "Post-run steps"),
    steps.el,
  );
  const submit = h("button", { type: "submit", class: "btn btn-primary", form: "run-form" }, icon("play"), "Run");
  const cancel = h("button", { type: "button", class: "btn" }, "Cancel");
  const schedule = onSchedule
    ? h("button", { type: "button", class: "btn", title: "Run it on a timetable instead" }, icon("clock"), "Schedule…")
    : null;
  const form = h(
    "form",
    { id: "run-form", class: "run-form", novalidate: true },
    banner,
    h("p", { class: "run-sub" }, h("span", { class: "mono" }, info.notebook), " · kernel ", info.kernel_name),
    h("fieldset", { class: "params" }, h("legend", { class: "sr-only" }, "Parameters"), paramsBody),
    advanced,
  );
  if (info.kernel_installed === false) {
    // Said at once, not after the form is filled in: the server would refuse the run (unknown_kernel).
    fill(
      banner,
      icon("alert"),
      h("span", null, `The kernel ${info.kernel_name} is not installed on the server: this notebook cannot run here.`),
    );
    banner.hidden = false;
    submit.disabled = true;
    if (schedule) schedule.disabled = true;
  }
  const { dialog, close } = modal({
    title: `Run ${baseName(notebook)}`,
    label: `Run ${notebook}`,
    className: "run-dialog",
    body: form,
    footer: [cancel, schedule, submit],
  });
  cancel.addEventListener("click", () => close(null));

  const byName = new Map(fields.map((f) => [f.name, f]));
  const showBanner = (message) => {
    fill(banner, icon("alert"), h("span", null, message));
    banner.hidden = !message;
  };
  const clearErrors = () => {
    showBanner("");
    fields.forEach((f) => f.setError(""));
    timeout.setError("");
    cellTimeout.setError("");
    steps.setError("");
  };

  /** Put each problem of a 422 next to its field; true when every one found a place. */
  const place = (error) => {
    let placed = 0;
    for (const problem of error.problems) {
      const name = problem.parameter ?? String(problem.field ?? "").replace(/^parameters\./, "");
      const field = byName.get(name);
      const target = field ?? { timeout_s: timeout, cell_timeout_s: cellTimeout }[name];
      if (target) {
        target.setError(problem.problem);
        placed += 1;
        if (!field) advanced.open = true;
      }
    }
    if (error.code === "invalid_steps") {
      steps.setError(error.message);
      advanced.open = true;
      return true;
    }
    const timeoutMatch = /^(cell_timeout_s|timeout_s)\b/.exec(error.message);
    if (error.code === "invalid_timeout" && timeoutMatch) {
      ({ timeout_s: timeout, cell_timeout_s: cellTimeout })[timeoutMatch[1]].setError(error.message);
      advanced.open = true;
      return true;
    }
    return placed > 0 && placed === error.problems.length;
  };

  /** The form's values as POST /api/jobs takes them, or null when a field cannot be read (its error shown). */
  const readBody = () => {
    clearErrors();
    const body = { notebook: info.notebook, parameters: {} };
    let invalid = false;
    if (rawParameters) {
      try {
        body.parameters = parseJson(rawParameters.value || "{}");
      } catch {
        showBanner("The parameters are not a valid JSON object.");
        return null;
      }
    }
    for (const field of fields) {
      try {
        const [changed, value] = field.read();
        if (changed) body.parameters[field.name] = value;
      } catch (error) {
        field.setError(error.message);
        invalid = true;
      }
    }
    if (invalid) return null;
    const timeoutS = timeout.read();
    const cellTimeoutS = cellTimeout.read();
    if (timeoutS !== undefined) body.timeout_s = timeoutS;
    if (cellTimeoutS !== undefined) body.cell_timeout_s = cellTimeoutS;
    const chosenSteps = steps.read();
    if (chosenSteps !== undefined) body.steps = chosenSteps;
    return body;
  };

  schedule?.addEventListener("click", () => {
    const body = readBody();
    if (body === null) return;
    close(null);
    onSchedule(body);
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = readBody();
    if (body === null) return;
    submit.disabled = true;
    dialog.setAttribute("aria-busy", "true");
    try {
      const job = await api.post("api/jobs", body);
      close(job);
      onSubmitted(job);
    } catch (error) {
      submit.disabled = false;
      dialog.removeAttribute("aria-busy");
      const placed = error.status === 422 && place(error);
      if (!placed) showBanner(error.message);
      (dialog.querySelector(".invalid input, .invalid textarea") ?? submit).focus();
    }
  });
  (fields[0]?.input ?? submit).focus();
}
