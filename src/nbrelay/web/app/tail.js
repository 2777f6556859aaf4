// A running job's latest output as a terminal shows it (Screen), and the job's tail (OutputTail): what its
// job.output events printed, live and, after a reload, read back from its stream's history without a line twice.

import { Pen } from "./sgr.js";

export const TAIL_LINES = 8;
export const TAIL_CHARS = 4000;

// A control sequence (CSI: ESC [ parameters, intermediates, final byte), such as the colours of SGR "\x1b[31m";
// a lone "\r" or "\n"; or a run of plain text.
const TOKEN = /\x1b\[([0-?]*)([ -/]*)([@-~])|\x1b(?!\[)|\r|\n|[^\x1b\r\n]+/g;
// A sequence cut off at the end of a write: its rest comes with the next event.
const CUT_SEQUENCE = /\x1b(\[[0-?]*[ -/]*)?$/;

/** A line of the screen: its text and, for each of its characters, the class its colours are drawn with. */
class Line {
  constructor(text = "", styles = []) {
    this.text = text;
    this.styles = styles;
  }

  /** Runs of text of one style: [{text, className}]. */
  get runs() {
    const runs = [];
    for (let i = 0; i < this.text.length; i += 1) {
      const className = this.styles[i];
      if (runs.length && runs.at(-1).className === className) runs.at(-1).text += this.text[i];
      else runs.push({ text: this.text[i], className });
    }
    return runs;
  }
}

/** Printed text as a terminal leaves it: "\r" goes back to the line's start (what follows overwrites it), SGR
 * sequences set the colours and emphasis of what follows (Pen), other escape sequences act on nothing; the last
 * TAIL_LINES lines are kept. */
export class Screen {
  constructor() {
    this.done = []; // the lines ended by "\n", the last TAIL_LINES of them up to the last one not empty
    this.blanks = 0; // the empty lines ended since
    this.line = new Line();
    this.column = 0;
    this.cut = ""; // the start of an escape sequence that the next write completes
    this.pen = new Pen();
  }

  write(text) {
    let input = this.cut + text;
    const cut = CUT_SEQUENCE.exec(input);
    this.cut = cut ? cut[0] : "";
    if (cut) input = input.slice(0, cut.index);
    for (const [token, parameters, intermediates, final] of input.matchAll(TOKEN)) {
      if (token === "\r") this.column = 0;
      else if (token === "\n") this.newLine();
      else if (final === "m" && !intermediates && /^[0-9;:]*$/.test(parameters)) this.pen.apply(parameters);
      else if (token[0] !== "\x1b") this.print(token);
    }
  }

  print(text) {
    const { text: line, styles } = this.line;
    const end = this.column + text.length;
    this.line.text = line.slice(0, this.column) + text + line.slice(end);
    this.line.styles = [
      ...styles.slice(0, this.column),
      ...Array(text.length).fill(this.pen.className),
      ...styles.slice(end),
    ];
    this.column = end;
    const over = this.line.text.length - TAIL_CHARS; // a line that never ends: only its end can be shown
    if (over > 0) {
      this.line = new Line(this.line.text.slice(over), this.line.styles.slice(over));
      this.column = Math.max(0, this.column - over);
    }
  }

  newLine() {
    // Empty lines at the end are not shown, so they are only counted: they must not push out the lines shown.
    const printed = this.line.text !== "";
    if (printed) this.done = [...this.done, ...this.blankLines(), this.line].slice(-TAIL_LINES);
    this.blanks = printed ? 0 : this.blanks + 1;
    this.line = new Line();
    this.column = 0;
  }

  blankLines() {
    return Array.from({ length: Math.min(this.blanks, TAIL_LINES) }, () => new Line());
  }

  /** The lines to show (Line: text and styles): the last TAIL_LINES, without the empty ones at the end. */
  get rows() {
    const current = this.line.text ? [...this.blankLines(), this.line] : [];
    return [...this.done, ...current].slice(-TAIL_LINES);
  }

  /** The text of the lines to show. */
  get lines() {
    return this.rows.map((line) => line.text);
  }
}

// The same job.output event comes on both streams of the job (user:<owner> and job:<id>) with other offsets but
// the same time and data: that is how a live event is known to be one the history brought already.
function outputKey(event) {
  const { cell, name, text } = event.data ?? {};
  return JSON.stringify([event.ts, cell, name, text]);
}

/**
 * A job's output tail. Live events are shown as they come. A job that was running before the page connected
 * printed things the page never got live: `awaitHistory()` marks it, `fill(history)` then puts its earlier
 * events first. The last of those may be live events too (published after the page subscribed, delivered before
 * or after the history): live events are one run in publish order, so the first one found in the history
 * starts a run of echoes, dropped for as long as they follow the history one by one.
 */
export class OutputTail {
  constructor() {
    this.screen = new Screen();
    this.live = null; // while awaiting the history: the live events shown meanwhile, redrawn after it
    this.liveChars = 0;
    this.history = null; // after a fill: the keys of the history's events, while live echoes of them may come
    this.echoAt = -1; // the index in `history` of the last echo dropped
  }

  get lines() {
    return this.screen.lines;
  }

  /** The lines with their colours (Screen.rows). */
  get rows() {
    return this.screen.rows;
  }

  /** Whether the history can still add to what the tail shows. */
  get awaitingHistory() {
    return this.live !== null;
  }

  awaitHistory() {
    this.live ??= [];
  }

  /** A live job.output event. */
  add(event) {
    if (this.isEcho(event)) return;
    this.screen.write(event.data?.text ?? "");
    if (!this.live) return;
    this.live.push(event);
    this.liveChars += (event.data?.text ?? "").length;
    // Live output alone fills the tail by now: older output could not show. No need to keep it for the fill.
    if (this.liveChars > TAIL_CHARS) this.live = null;
  }

  /** The job's job.output events from its stream's history, oldest first: drawn before the live ones. */
  fill(history) {
    const live = this.live;
    this.live = null;
    this.liveChars = 0;
    if (!live || !history.length) return; // nothing to add: what the tail shows stays
    this.screen = new Screen();
    this.history = history.map(outputKey);
    this.echoAt = -1;
    for (const event of history) this.screen.write(event.data?.text ?? "");
    for (const event of live) this.add(event);
  }

  isEcho(event) {
    if (!this.history) return false;
    const key = outputKey(event);
    const at = this.echoAt < 0 ? this.history.indexOf(key) : this.echoAt + 1;
    if (at >= 0 && this.history[at] === key) {
      this.echoAt = at;
      if (at === this.history.length - 1) this.history = null; // the last echo: nothing more can repeat
      return true;
    }
    this.history = null; // a live event the history does not have: every later one is newer still
    return false;
  }
}
