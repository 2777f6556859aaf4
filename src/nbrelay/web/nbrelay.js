// nbrelay browser client: live notebook-job events over WebSocket, with an SSE fallback.
//
// Plain ES module, no dependencies and no build step. Every outside dependency (WebSocket, EventSource,
// fetch, timers, clock, randomness, location) can be injected, so the whole state machine is unit-tested in
// node with fakes (tests/js/nbrelay.test.mjs).
//
//   const client = new NbrelayClient({ base: "/nbrelay", token });
//   client.on("job.progress", (event) => render(event.data));
//   client.on("recovered", ({ stream, recovered }) => { if (!recovered) reloadFromRest(stream); });
//   client.connect();
//   client.subscribe("job:7");
//
// Protocol v1 in short (see src/nbrelay/transports/session.py for the server side):
//   client → server  {"op":"subscribe","stream","since"?} · {"op":"unsubscribe","stream"} · {"op":"ping"}
//   server → client  welcome · snapshot · event · recovered · pong · error
//   close codes      4000–4499 reconnect · 4500–4999 never reconnect · anything else reconnect
//   SSE fallback     <base>/sse?streams=a,b[&token=][&last_event_id=]; events as `message`, lastEventId is
//                    the composite position "stream=epoch:offset,…"; named events welcome/snapshot/recovered.

export const DEFAULT_HEARTBEAT_S = 25; // used until the welcome names the server's period
export const FALLBACK_AFTER_FAILURES = 3; // consecutive WebSocket attempts that never reached "welcome"
export const WATCHDOG_CLOSE_CODE = 4000; // what we close a silent socket with (4000–4499: "reconnect")

const WS_OPEN = 1; // WebSocket.OPEN; a constant so that fakes need not define it
const ES_CLOSED = 2; // EventSource.CLOSED

// Server errors about one stream that will never succeed on a retry: stop asking for that stream, otherwise
// every reconnect would subscribe to it again.
const HOPELESS_STREAM_ERRORS = new Set(["forbidden", "bad_stream"]);

// ---------------------------------------------------------------------------------------------------------
// Pure helpers (exported for tests and for apps that want them)
// ---------------------------------------------------------------------------------------------------------

/** "k3f9:42" → {epoch: "k3f9", offset: 42}; null for anything else (same rule as the server's parser). */
export function parsePosition(id) {
  if (typeof id !== "string") return null;
  const colon = id.lastIndexOf(":");
  const epoch = id.slice(0, colon);
  const digits = id.slice(colon + 1);
  if (colon < 1 || !/^[0-9]+$/.test(digits)) return null;
  return { epoch, offset: Number(digits) };
}

/** True for close codes after which the server asks us to never reconnect (4500–4999). */
export function isTerminalClose(code) {
  return code >= 4500 && code <= 4999;
}

/**
 * Exponential backoff with full jitter: random() * min(max, min * 2**attempt).
 * `attempt` is the number of retries already made since the last welcome (0 for the first), so by default
 * the first wait is under 0.5 s and no wait is ever over 20 s. Full jitter spreads a crowd of clients that
 * all lost the same server, instead of having them reconnect in lockstep.
 */
export function backoffDelay(attempt, { minBackoffMs = 500, maxBackoffMs = 20000, random = Math.random } = {}) {
  const ceiling = Math.min(maxBackoffMs, minBackoffMs * 2 ** attempt);
  return random() * ceiling;
}

/** {stream: "epoch:offset"} → "stream=epoch:offset,…" for the given streams (those with a known position). */
export function composeLastEventId(lastIds, streams = Object.keys(lastIds)) {
  return streams
    .filter((stream) => parsePosition(lastIds[stream]))
    .map((stream) => `${stream}=${lastIds[stream]}`)
    .join(",");
}

/** "stream=epoch:offset,…" → {stream: "epoch:offset"}; malformed pairs are skipped. */
export function parseLastEventId(text) {
  const positions = {};
  if (typeof text !== "string") return positions;
  for (const pair of text.split(",")) {
    const eq = pair.indexOf("="); // stream names never contain "=", so the first one splits
    const stream = pair.slice(0, eq).trim();
    const id = pair.slice(eq + 1).trim();
    if (eq > 0 && stream && parsePosition(id)) positions[stream] = id;
  }
  return positions;
}

// Stream names keep their ":" readable in the query; everything else ("+", "@", …) is escaped, because a
// bare "+" would reach the server as a space.
function encodeStream(stream) {
  return encodeURIComponent(stream).replace(/%3A/gi, ":");
}

// The page's address from a Location, or from a bare {protocol, host} as a test or an embedder may pass.
function pageUrl(location) {
  if (!location) return undefined;
  return location.href ?? `${location.protocol}//${location.host}/`;
}

function withoutOp(message) {
  const { op, ...rest } = message; // eslint-disable-line no-unused-vars
  return rest;
}

function parseJson(text) {
  try {
    const value = JSON.parse(text);
    return value && typeof value === "object" ? value : null;
  } catch {
    return null; // not a protocol frame: ignore it rather than break the connection
  }
}

function reportHandlerError(err) {
  // A throwing app handler must not break the client's state machine; surface it like an uncaught error.
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else console.error(err);
}

// ---------------------------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------------------------

export class NbrelayClient {
  constructor(options = {}) {
    const o = options;
    this.base = String(o.base ?? "").replace(/\/+$/, "");
    this.token = o.token ?? null;
    this.minBackoffMs = o.minBackoffMs ?? 500;
    this.maxBackoffMs = o.maxBackoffMs ?? 20000;
    this.graceMs = o.graceMs ?? 10000;
    // Not used by the client itself: kept so that handlers (e.g. of recovered:false) re-read REST with the
    // same injected fetch the tests control.
    this.fetch = "fetch" in o ? o.fetch : globalThis.fetch ? globalThis.fetch.bind(globalThis) : null;

    // An explicit `WebSocket: undefined` (or EventSource) means "not available here".
    this._WebSocket = "WebSocket" in o ? o.WebSocket : globalThis.WebSocket;
    this._EventSource = "EventSource" in o ? o.EventSource : globalThis.EventSource;
    this._location = o.location ?? globalThis.location;
    // Where the browser's `online`/`offline` events fire (the window); null where there is none (node).
    this._network = "network" in o ? o.network : (globalThis.window ?? null);
    this._onOffline = () => this._wentOffline();
    this._onOnline = () => this._cameOnline();
    // Wrapped so they are never called as methods of `this` (native timers throw "Illegal invocation").
    const setTimeoutFn = o.setTimeout ?? globalThis.setTimeout;
    const clearTimeoutFn = o.clearTimeout ?? globalThis.clearTimeout;
    const nowFn = o.now ?? Date.now;
    const randomFn = o.random ?? Math.random;
    this._setTimeout = (fn, ms) => setTimeoutFn.call(globalThis, fn, ms);
    this._clearTimeout = (id) => clearTimeoutFn.call(globalThis, id);
    this._now = () => nowFn();
    this._random = () => randomFn();

    this.lastIds = {}; // stream → "epoch:offset" of the last event seen (the resume point)
    this.lastEventId = null; // the SSE composite exactly as the server last sent it
    this.user = null;
    this.admin = false;
    this.heartbeatS = DEFAULT_HEARTBEAT_S;
    this.closeEvent = null; // {code, reason} of a 45xx close

    this._status = "closed";
    this._handlers = new Map();
    // Default streams: broadcast from the start, user:<me> as soon as a welcome names the user.
    this._streams = new Set(o.streams ?? ["broadcast"]);
    this._defaultsPending = o.streams == null;
    this._unsubscribed = new Set(); // so that the app can drop user:<me> before the welcome adds it

    this._wsUrl = null; // computed by connect()
    this._probes = 0; // health probes started; a stale one's answer is ignored
    this._ws = null;
    this._welcomed = false; // the current socket got its welcome (only then may we subscribe on it)
    this._es = null;
    this._esStreams = null; // the stream list the current EventSource was opened with
    this._attempt = 0; // retries since the last welcome: the backoff exponent
    this._failedConnects = 0; // consecutive WebSocket attempts that ended before a welcome
    this._lastHeard = 0;
    this._timers = { reconnect: null, ping: null, watchdog: null };
    this._retry = null; // what the reconnect timer will do: opening a socket or an EventSource
  }

  // --- public API -----------------------------------------------------------------------------------------

  /** "connecting" | "live" | "reconnecting" | "fallback" | "closed" */
  get status() {
    return this._status;
  }

  /** The streams this client follows (or will follow once connected). */
  get streams() {
    return [...this._streams];
  }

  /** Listen to an event type ("job.progress", …, "*" for every event) or to welcome, snapshot, recovered,
   * status, error. Returns a function that removes the listener. */
  on(type, fn) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(fn);
    return () => this.off(type, fn);
  }

  off(type, fn) {
    this._handlers.get(type)?.delete(fn);
    return this;
  }

  connect() {
    if (this._status !== "closed") return this; // already running
    this._wsUrl = this._WebSocket ? this.wsUrl() : null; // a bad base throws here, not later in a timer
    this.closeEvent = null;
    this._attempt = 0;
    this._failedConnects = 0;
    this._setStatus("connecting");
    this._network?.addEventListener("offline", this._onOffline);
    this._network?.addEventListener("online", this._onOnline);
    if (this._wsUrl) this._openSocket();
    else this._startFallback(); // no WebSocket in this environment at all
    return this;
  }

  subscribe(stream) {
    if (typeof stream !== "string" || !stream) throw new TypeError("subscribe: stream must be a non-empty string");
    this._unsubscribed.delete(stream);
    if (this._streams.has(stream)) return this;
    this._streams.add(stream);
    if (this._welcomed) this._sendSubscribe(stream);
    else if (this._es) this._syncEventSource(); // otherwise the next welcome/EventSource includes it
    return this;
  }

  unsubscribe(stream) {
    this._unsubscribed.add(stream);
    if (!this._streams.delete(stream)) return this;
    delete this.lastIds[stream]; // a later subscribe starts fresh instead of replaying what it missed
    if (this._welcomed) this._send({ op: "unsubscribe", stream });
    else if (this._es) this._syncEventSource();
    return this;
  }

  close() {
    if (this._status === "closed") return this;
    this._shutdown();
    this._setStatus("closed");
    return this;
  }

  /** ws(s)://host/<base>/ws[?token=…], the scheme following the page's http/https. */
  wsUrl() {
    let url;
    try {
      url = new URL(`${this.base}/ws`, pageUrl(this._location)); // an absolute base ignores the page
    } catch {
      const base = JSON.stringify(this.base);
      throw new TypeError(`nbrelay: cannot make a WebSocket URL from base ${base} without a page location`);
    }
    const scheme = { "https:": "wss:", "http:": "ws:" }[url.protocol] ?? url.protocol;
    const query = this.token != null ? `?token=${encodeURIComponent(this.token)}` : "";
    return `${scheme}//${url.host}${url.pathname}${query}`;
  }

  /** <base>/sse?streams=…[&token=…][&last_event_id=…] (relative: EventSource resolves it against the page). */
  sseUrl(streams = this.streams) {
    const query = [];
    if (streams.length) query.push(`streams=${streams.map(encodeStream).join(",")}`);
    if (this.token != null) query.push(`token=${encodeURIComponent(this.token)}`);
    const lastEventId = composeLastEventId(this.lastIds, streams);
    if (lastEventId) query.push(`last_event_id=${encodeURIComponent(lastEventId)}`);
    return `${this.base}/sse${query.length ? `?${query.join("&")}` : ""}`;
  }

  // --- events out -----------------------------------------------------------------------------------------

  _emit(type, payload) {
    const handlers = this._handlers.get(type);
    if (!handlers) return;
    for (const fn of [...handlers]) {
      try {
        fn(payload);
      } catch (err) {
        reportHandlerError(err);
      }
    }
  }

  _setStatus(status) {
    if (status === this._status) return;
    this._status = status;
    this._emit("status", status);
  }

  // --- WebSocket ------------------------------------------------------------------------------------------

  _openSocket() {
    let ws;
    try {
      ws = new this._WebSocket(this._wsUrl);
    } catch {
      this._connectionFailed(false); // e.g. a SecurityError: counts like a failed handshake
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    this._lastHeard = this._now();
    // Handlers check they still belong to the current socket: a dropped socket may still fire late events.
    ws.onmessage = (e) => ws === this._ws && this._onSocketMessage(e.data);
    ws.onclose = (e) => ws === this._ws && this._onSocketClose(e.code, e.reason);
    ws.onerror = () => {}; // browsers always follow an error with a close; it is handled there
    // Armed already before the welcome: a handshake that hangs (a proxy holding the upgrade) is a failure too.
    this._armWatchdog();
  }

  _onSocketMessage(text) {
    this._lastHeard = this._now(); // anything at all proves the connection alive, pongs included
    const message = parseJson(text);
    if (!message) return;
    switch (message.op) {
      case "welcome":
        return this._onWelcome(message);
      case "snapshot":
        return this._emit("snapshot", withoutOp(message));
      case "event":
        return this._onEvent(withoutOp(message));
      case "recovered":
        return this._onRecovered(message);
      case "error":
        return this._onServerError(message);
      default:
        return; // "pong", and ops of later protocol versions: their arrival already fed the watchdog
    }
  }

  _onWelcome(message) {
    this._learnUser(message);
    const heartbeat = Number(message.heartbeat_s);
    this.heartbeatS = heartbeat > 0 ? heartbeat : DEFAULT_HEARTBEAT_S;
    this._welcomed = true;
    this._attempt = 0;
    this._failedConnects = 0;
    for (const stream of [...this._streams]) this._sendSubscribe(stream); // resumes where each one stopped
    this._schedulePing();
    this._armWatchdog();
    this._setStatus("live");
    this._emit("welcome", withoutOp(message));
  }

  _onSocketClose(code, reason) {
    const welcomed = this._welcomed;
    this._dropSocket();
    if (isTerminalClose(code)) this._terminate(code, reason);
    else this._connectionFailed(welcomed);
  }

  _sendSubscribe(stream) {
    const message = { op: "subscribe", stream };
    if (this.lastIds[stream]) message.since = this.lastIds[stream];
    this._send(message);
  }

  _send(message) {
    if (this._ws && this._ws.readyState === WS_OPEN) this._ws.send(JSON.stringify(message));
  }

  /** Detach from the current socket (no more of its events reach us) and stop its timers. */
  _dropSocket() {
    const ws = this._ws;
    this._ws = null;
    this._welcomed = false;
    this._clearTimer("ping");
    this._clearTimer("watchdog");
    if (ws) ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    return ws;
  }

  // --- liveness -------------------------------------------------------------------------------------------

  // The app-level ping keeps the server's idle check (4012) happy and makes the server answer, so that a
  // quiet but healthy connection still hears something every heartbeat.
  _schedulePing() {
    this._clearTimer("ping");
    this._timers.ping = this._setTimeout(() => {
      this._timers.ping = null;
      this._send({ op: "ping" });
      this._schedulePing();
    }, this.heartbeatS * 1000);
  }

  // A socket can die without a close event (a laptop lid, a NAT dropping state): the browser only notices
  // after minutes. The watchdog notices silence instead. One timer per window rather than one per message:
  // when it fires early (messages arrived meanwhile) it re-arms for the rest of the window.
  _armWatchdog() {
    this._clearTimer("watchdog");
    const windowMs = this.heartbeatS * 1000 + this.graceMs;
    const check = () => {
      const silentMs = this._now() - this._lastHeard;
      if (silentMs >= windowMs) this._watchdogTrip(windowMs);
      else this._timers.watchdog = this._setTimeout(check, windowMs - silentMs);
    };
    this._timers.watchdog = this._setTimeout(check, windowMs - (this._now() - this._lastHeard));
  }

  _watchdogTrip(windowMs) {
    const welcomed = this._welcomed;
    const ws = this._dropSocket();
    // Don't wait for the close handshake: on a dead connection it would take as long as the silence did.
    try {
      ws?.close(WATCHDOG_CLOSE_CODE, `no message from the server in ${windowMs / 1000} s`);
    } catch {
      // already closing
    }
    this._connectionFailed(welcomed);
  }

  // --- reconnecting ---------------------------------------------------------------------------------------

  _connectionFailed(welcomed) {
    if (welcomed || !this.fetch) {
      this._countFailure(!welcomed);
      return;
    }
    // Before a failed WebSocket counts toward the SSE fallback, ask whether the server answers HTTP at all:
    // a server that is down (a restart) is no reason to give up on WebSocket; one that answers HTTP but not
    // WebSocket (a proxy that breaks upgrades) is.
    if (this._status !== "fallback") this._setStatus("reconnecting");
    const probe = ++this._probes;
    Promise.resolve()
      .then(() => this.fetch(`${this.base}/api/health`, { cache: "no-store" }))
      .then(
        () => true,
        () => false,
      )
      .then((serverUp) => {
        if (probe === this._probes && this._status !== "closed") this._countFailure(serverUp);
      });
  }

  _countFailure(counts) {
    if (counts) this._failedConnects += 1;
    if (this._failedConnects >= FALLBACK_AFTER_FAILURES && this._EventSource) this._startFallback();
    else this._scheduleRetry(() => this._openSocket());
  }

  _scheduleRetry(retry) {
    const delay = backoffDelay(this._attempt, {
      minBackoffMs: this.minBackoffMs,
      maxBackoffMs: this.maxBackoffMs,
      random: this._random,
    });
    this._attempt += 1;
    if (this._status !== "fallback") this._setStatus("reconnecting");
    this._clearTimer("reconnect");
    this._retry = retry;
    this._timers.reconnect = this._setTimeout(() => {
      this._timers.reconnect = null;
      retry();
    }, delay);
  }

  // The browser knows at once when the network goes: a socket then carries nothing, but only the watchdog would
  // notice, a heartbeat window later. Say so now and reconnect as for any dropped connection.
  _wentOffline() {
    if (this._es) {
      this._closeEventSource();
      this._setStatus("reconnecting");
      this._scheduleRetry(() => this._openEventSource());
    } else if (this._ws) {
      const ws = this._dropSocket();
      try {
        ws.close(WATCHDOG_CLOSE_CODE, "the browser went offline");
      } catch {
        // already closing
      }
      this._scheduleRetry(() => this._openSocket()); // not a failure of WebSocket itself: no step to SSE
    }
  }

  // Back online: retry now rather than after a backoff that grew while every attempt failed.
  _cameOnline() {
    this._attempt = 0;
    if (this._timers.reconnect == null) return; // connected, or an attempt under way (its retry comes soon)
    this._clearTimer("reconnect");
    this._retry();
  }

  _terminate(code, reason) {
    this._shutdown();
    this.closeEvent = { code, reason };
    this._emit("error", { code, reason });
    this._setStatus("closed");
  }

  _shutdown() {
    this._probes += 1; // a health probe still under way must not schedule anything now
    this._network?.removeEventListener("offline", this._onOffline);
    this._network?.removeEventListener("online", this._onOnline);
    for (const name of Object.keys(this._timers)) this._clearTimer(name);
    const ws = this._dropSocket();
    try {
      ws?.close(1000, "client closed");
    } catch {
      // already closing
    }
    this._closeEventSource();
  }

  _clearTimer(name) {
    if (this._timers[name] != null) this._clearTimeout(this._timers[name]);
    this._timers[name] = null;
  }

  // --- SSE fallback ---------------------------------------------------------------------------------------
  //
  // Used when WebSocket is missing or failed FALLBACK_AFTER_FAILURES times in a row before a welcome (a
  // proxy that breaks upgrades, typically). The client then stays on SSE until close() or a page reload:
  // retrying WebSocket in the background would add a second transport switch (and its edge cases) for
  // little gain, since SSE carries the same events with the same resume positions.
  //
  // No ping and no watchdog here: the server's SSE heartbeats are comments, which EventSource never shows
  // us, so silence proves nothing. EventSource reconnects by itself (sending Last-Event-ID); we only step in
  // when it gives up for good (readyState CLOSED, e.g. an HTTP error status).

  _startFallback() {
    this._clearTimer("reconnect");
    if (!this._EventSource) {
      this._terminate("unsupported", "neither WebSocket nor EventSource is available");
      return;
    }
    this._attempt = 0;
    this._setStatus("fallback");
    this._openEventSource();
  }

  _openEventSource() {
    const streams = this.streams;
    let es;
    try {
      es = new this._EventSource(this.sseUrl(streams));
    } catch {
      this._scheduleRetry(() => this._openEventSource());
      return;
    }
    this._es = es;
    this._esStreams = streams.join(",");
    const listen = (type, fn) => es.addEventListener(type, (e) => es === this._es && fn(e));
    listen("open", () => {
      this._attempt = 0;
      this._setStatus("fallback"); // again, after reconnecting from going offline
    });
    listen("message", (e) => this._onSseMessage(e));
    listen("welcome", (e) => this._withJson(e, (m) => this._onSseWelcome(m)));
    listen("snapshot", (e) => this._withJson(e, (m) => this._emit("snapshot", withoutOp(m))));
    listen("recovered", (e) => this._withJson(e, (m) => this._onRecovered(m)));
    listen("error", (e) => this._onSseError(e));
  }

  _withJson(e, fn) {
    const message = parseJson(e.data);
    if (message) fn(message);
  }

  _onSseMessage(e) {
    this._withJson(e, (event) => this._onEvent(withoutOp(event)));
    if (e.lastEventId) this._adoptLastEventId(e.lastEventId);
  }

  _adoptLastEventId(composite) {
    this.lastEventId = composite;
    for (const [stream, id] of Object.entries(parseLastEventId(composite))) {
      if (this._streams.has(stream)) this.lastIds[stream] = id;
    }
  }

  _onSseWelcome(message) {
    this._learnUser(message);
    this._emit("welcome", withoutOp(message));
    this._syncEventSource(); // the welcome may have named the user, adding user:<me> to the streams
  }

  _onSseError(e) {
    // The server may send an `error` event of its own; it carries data, a connection error does not.
    if (typeof e?.data === "string" && e.data) {
      this._withJson(e, (m) => this._onServerError(m));
      return;
    }
    if (this._es.readyState !== ES_CLOSED) return; // EventSource is already retrying by itself
    this._closeEventSource();
    this._scheduleRetry(() => this._openEventSource());
  }

  /** An EventSource's streams are fixed by its URL: a changed stream set needs a new one (resuming). */
  _syncEventSource() {
    if (!this._es || this._esStreams === this.streams.join(",")) return;
    this._closeEventSource();
    this._openEventSource();
  }

  _closeEventSource() {
    const es = this._es;
    this._es = null;
    this._esStreams = null;
    es?.close();
  }

  // --- messages common to both transports -----------------------------------------------------------------

  _learnUser(message) {
    this.user = message.user ?? null;
    this.admin = Boolean(message.admin);
    if (!this._defaultsPending || !this.user) return;
    this._defaultsPending = false;
    const own = `user:${this.user}`;
    if (!this._unsubscribed.has(own)) this._streams.add(own);
  }

  _onEvent(event) {
    // Dropped: events still in flight for a stream the app just unsubscribed from.
    if (typeof event.stream === "string" && !this._streams.has(event.stream)) return;
    if (!this._isNew(event)) return;
    this._emit(event.type, event);
    this._emit("*", event);
  }

  /**
   * Dedupe by offset, and advance the stream's position. A resume replays from `since`, which may overlap
   * what we already have; offsets only rise within an epoch, so anything at or below the last one is a
   * duplicate. A new epoch means the server's history restarted: accept and start counting from there.
   */
  _isNew({ stream, epoch, offset }) {
    if (typeof stream !== "string" || typeof epoch !== "string" || !Number.isInteger(offset)) return true;
    const known = parsePosition(this.lastIds[stream]);
    if (known && known.epoch === epoch && offset <= known.offset) return false;
    this.lastIds[stream] = `${epoch}:${offset}`;
    return true;
  }

  /**
   * recovered: true → the missed events follow in order (positions advance as they arrive).
   * recovered: false → they are gone; the app must re-read state over REST. We jump to the server's
   * position so that the next resume asks from there instead of failing the same way again.
   */
  _onRecovered(message) {
    const { stream, recovered, position } = message;
    if (!recovered && this._streams.has(stream) && parsePosition(position)) this.lastIds[stream] = position;
    this._emit("recovered", { stream, recovered: Boolean(recovered), position });
  }

  _onServerError(message) {
    const { code, reason, stream } = message;
    if (stream && HOPELESS_STREAM_ERRORS.has(code) && this._streams.delete(stream)) {
      delete this.lastIds[stream];
      this._syncEventSource();
    }
    this._emit("error", stream ? { code, reason, stream } : { code, reason });
  }
}

export default NbrelayClient;
