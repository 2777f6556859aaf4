// Deterministic stand-ins for the browser APIs the client uses: a virtual clock, WebSocket and EventSource.
// Not a test file itself (node --test only runs *.test.mjs here).

/** setTimeout/clearTimeout/now on a virtual clock; advance(ms) runs due timers in time order. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.time = start;
    this.timers = new Map();
    this.nextId = 1;
    this.setTimeout = (fn, ms = 0) => {
      const id = this.nextId++;
      this.timers.set(id, { at: this.time + Math.max(0, Number(ms) || 0), fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.timers.delete(id);
    };
    this.now = () => this.time;
  }

  /** Number of timers still pending. */
  get pending() {
    return this.timers.size;
  }

  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, timer] of this.timers) {
        if (timer.at <= end && (next === null || timer.at < next[1].at)) next = [id, timer];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
  }
}

/** A WebSocket class whose instances the test drives from the "server" side. */
export function makeFakeWebSocket() {
  class FakeWebSocket {
    static instances = [];
    static throwOnCreate = false;

    constructor(url) {
      if (FakeWebSocket.throwOnCreate) throw new Error("SecurityError");
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      FakeWebSocket.instances.push(this);
    }

    static get last() {
      return FakeWebSocket.instances.at(-1);
    }

    // client side
    send(text) {
      if (this.readyState !== 1) throw new Error("InvalidStateError: not open");
      this.sent.push(JSON.parse(text));
    }

    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
      this.onclose?.({ code: code ?? 1005, reason: reason ?? "", wasClean: true });
    }

    // server side
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }

    receive(message) {
      this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }

    drop(code = 1006, reason = "") {
      this.readyState = 3;
      if (code === 1006) this.onerror?.({});
      this.onclose?.({ code, reason, wasClean: code !== 1006 });
    }

    /** Messages the client sent with this op. */
    ops(op) {
      return this.sent.filter((m) => m.op === op);
    }
  }
  return FakeWebSocket;
}

/** An EventSource class; dispatch(type, init) delivers an event to the client's listeners. */
export function makeFakeEventSource() {
  class FakeEventSource {
    static instances = [];

    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.closed = false;
      this.listeners = new Map();
      FakeEventSource.instances.push(this);
    }

    static get last() {
      return FakeEventSource.instances.at(-1);
    }

    addEventListener(type, fn) {
      if (!this.listeners.has(type)) this.listeners.set(type, []);
      this.listeners.get(type).push(fn);
    }

    removeEventListener(type, fn) {
      this.listeners.set(type, (this.listeners.get(type) ?? []).filter((f) => f !== fn));
    }

    close() {
      this.closed = true;
      this.readyState = 2;
    }

    dispatch(type, init = {}) {
      for (const fn of this.listeners.get(type) ?? []) fn({ type, data: "", lastEventId: "", ...init });
    }

    // server side
    open() {
      this.readyState = 1;
      this.dispatch("open");
    }

    message(event, lastEventId = "") {
      this.dispatch("message", { data: JSON.stringify(event), lastEventId });
    }

    named(type, payload) {
      this.dispatch(type, { data: JSON.stringify(payload) });
    }

    /** A connection error; readyState 0 = the browser retries by itself, 2 = it gave up. */
    fail(readyState = 0) {
      this.readyState = readyState;
      this.dispatch("error");
    }

    /** The query parameters of this EventSource's URL, decoded. */
    get params() {
      return Object.fromEntries(new URL(this.url, "http://page.test").searchParams);
    }
  }
  return FakeEventSource;
}
