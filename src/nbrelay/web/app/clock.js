// The server's clock as the page knows it. Relative times ("3 min ago") compare the server's timestamps with
// now, so a browser clock that is off by an hour would say "in 60 minutes" of a job that just finished. Every
// view reads now from here.

let skewMs = null; // how far the browser's clock is ahead of the server's

/** Learn the offset from a time the server stamped as it sent something (a push event's `ts`). */
export function noteServerTime(iso, receivedAt = Date.now()) {
  const sent = Date.parse(iso);
  if (!Number.isFinite(sent)) return;
  // The smallest lag seen is the closest to the true offset: delivery only ever adds to it.
  const lag = receivedAt - sent;
  if (skewMs === null || lag < skewMs) skewMs = lag;
}

/** Now, on the server's clock (the browser's own until the server's is known). */
export function serverNow() {
  return Date.now() - (skewMs ?? 0);
}
