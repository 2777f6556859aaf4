"""Python client for the nbrelay REST API: submit a notebook, read jobs, wait for one to finish.

What goes wrong raises `RemoteError` (nbrelay.errors), a `NbrelayError`: the status, code, message and hint of the
server's answer (status 0: the server was not reached)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from nbrelay.errors import NbrelayError, RemoteError
from nbrelay.models import TERMINAL_EVENTS

__all__ = ["TERMINAL_EVENTS", "Client", "NbrelayError", "RemoteError", "tls_context"]

T = TypeVar("T")


class _PushSocket:
    """A WebSocket whose reads and writes all happen on one thread: websockets' asyncio client on an event loop
    of its own, in a thread of its own (so it also works where a loop is already running, as in Jupyter).

    The threaded client reads on one thread while the caller writes on another; over TLS 1.3 a server's
    post-handshake messages then now and then cost the handshake request and the connect hangs (seen through
    nginx about once in eight connects).
    """

    def __init__(self, url: str, tls: ssl.SSLContext | None = None):
        self.url = url
        self.tls = tls
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="nbrelay-push", daemon=True)
        self.ws: ClientConnection | None = None

    def __enter__(self) -> _PushSocket:
        self.thread.start()
        try:
            self.ws = self._run(self._connect())
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.ws is not None:
                with contextlib.suppress(Exception):
                    self._run(self.ws.close())
        finally:
            self._stop()

    async def _connect(self) -> ClientConnection:
        return await connect(self.url, ssl=self.tls, open_timeout=10, close_timeout=2, max_size=2**22)

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def recv(self, timeout: float) -> str:
        assert self.ws is not None
        message = self._run(asyncio.wait_for(self.ws.recv(), timeout))
        return message if isinstance(message, str) else message.decode()

    def send(self, text: str) -> None:
        assert self.ws is not None
        self._run(self.ws.send(text))

    def tls_version(self) -> str | None:
        """The TLS version of the connection (None for plain ws://)."""
        assert self.ws is not None
        ssl_object = self.ws.transport.get_extra_info("ssl_object")
        return ssl_object.version() if ssl_object is not None else None


def tls_context(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext:
    """The TLS settings for https/wss: True the system's CAs, a path a CA bundle (a private CA), False none."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


class Client:
    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8765",
        *,
        token: str | None = None,
        timeout_s: float = 30,
        verify: bool | str | ssl.SSLContext = True,
    ):
        """`verify`: for an https server, True checks its certificate against the system's CAs, a path against
        that CA bundle, False not at all (or pass an ssl.SSLContext)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.tls = tls_context(verify) if self.base_url.startswith("https:") else None
        self.http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s, verify=self.tls or True)
        self.last_ids: dict[str, str] = {}  # stream → last event id seen, for resume across reconnects

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        """A request whose answer is JSON: the decoded answer, or RemoteError."""
        return self._send(method, path, **kw).json()

    def ready(self) -> dict[str, Any]:
        """GET /api/ready: {"status": "ready" or "not_ready", "version", "checks": {name: {"ok", "ms", "reason"?}}}.
        A node that is not ready answers too (503 is its answer here, not an error); RemoteError when the server
        cannot be reached or is not nbrelay."""
        try:
            return dict(self._call("GET", "/api/ready"))
        except RemoteError as exc:
            if exc.status == 503 and "checks" in exc.body:
                return dict(exc.body)
            raise

    def parameters(self, notebook: str) -> dict[str, Any]:
        return self._call("GET", f"/api/notebooks/{_quoted(notebook)}/parameters")

    def submit(
        self,
        notebook: str,
        parameters: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        cell_timeout_s: float | None = None,
        kernel_name: str | None = None,
        steps: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Submit a job (202: queued). `kernel_name` defaults to the notebook's kernel; `steps` (post-run file steps,
        docs/files.md) to the notebook's own, `[]` for none."""
        body: dict[str, Any] = {"notebook": notebook, "parameters": parameters or {}}
        given = {"timeout_s": timeout_s, "cell_timeout_s": cell_timeout_s, "kernel_name": kernel_name, "steps": steps}
        body.update({key: value for key, value in given.items() if value is not None})
        return self._call("POST", "/api/jobs", json=body)

    def job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/jobs/{job_id}")

    def jobs(
        self,
        *,
        state: str | None = None,
        notebook: str | None = None,
        schedule_id: int | None = None,
        limit: int = 50,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if notebook:
            params["notebook"] = notebook
        if schedule_id is not None:
            params["schedule_id"] = schedule_id
        return self._call("GET", "/api/jobs", params=params)

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._call("POST", f"/api/jobs/{job_id}/cancel")

    # schedules (docs/user-guide.md#schedules) --------------------------------------------------------------------
    def schedules(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/api/schedules")["schedules"])

    def schedule(self, schedule_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/schedules/{schedule_id}")

    def add_schedule(self, notebook: str, cron: str, timezone: str = "UTC", **fields: Any) -> dict[str, Any]:
        """Create a schedule; `fields`: parameters, enabled, name, overlap, missed, timeout_s, notify_email, …"""
        return self._call(
            "POST", "/api/schedules", json={"notebook": notebook, "cron": cron, "timezone": timezone, **fields}
        )

    def edit_schedule(self, schedule_id: int, **changes: Any) -> dict[str, Any]:
        """Change the fields given (enabled=False pauses, True resumes)."""
        return self._call("PATCH", f"/api/schedules/{schedule_id}", json=changes)

    def run_schedule(self, schedule_id: int) -> dict[str, Any]:
        """Run the schedule's notebook now: the queued job."""
        return self._call("POST", f"/api/schedules/{schedule_id}/run")

    def delete_schedule(self, schedule_id: int) -> None:
        self._send("DELETE", f"/api/schedules/{schedule_id}")

    def report(self, job_id: int) -> str:
        """The job's HTML report."""
        return self._send("GET", f"/api/jobs/{job_id}/report").text

    def wait(self, job_id: int, *, poll_s: float = 0.2, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll until the job is finished; returns the final job. A server that restarts meanwhile (unreachable,
        or its proxy's 502-504) is polled again, as the push client reconnects; a timeout says so."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        state = "unknown"
        while True:
            try:
                job = self.job(job_id)
            except RemoteError as exc:
                if not _passing(exc.status):
                    raise
            else:
                state = job["state"]
                if state not in ("queued", "running"):
                    return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {state} after {timeout_s} s")
            time.sleep(poll_s)

    # push ------------------------------------------------------------------------------------------------------
    def _ws_url(self) -> str:
        parts = urlsplit(self.base_url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = f"token={quote(self.token)}" if self.token else ""
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/ws", query, ""))

    def events(
        self,
        streams: Iterable[str] | None = None,
        *,
        max_backoff_s: float = 20.0,
        on_subscribed: Callable[[], dict[str, Any] | None] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every event of `streams` (default: your own stream), in order, across reconnects, without loss.

        Reconnects with exponential backoff and full jitter; resumes each stream from its last event id. When
        the server answers recovered=False (history gone), a {"op": "recovered", ...} message is yielded so
        the caller can re-read state over REST. `on_subscribed` runs once the server has the subscriptions
        (after each (re)connect); what it returns is yielded. Stops on close codes 4500-4999 (RemoteError).
        """
        wanted = list(streams or [])
        attempt = 0
        while True:
            try:
                with _PushSocket(self._ws_url(), self.tls) as ws:
                    attempt = 0
                    yield from self._session(ws, wanted, on_subscribed)
                    return
            except InvalidStatus as exc:
                status = exc.response.status_code
                if not _passing(status):  # a proxy's 502-504 while the server restarts: tried again
                    raise RemoteError(status, "handshake_refused", f"WebSocket refused with HTTP {status}") from exc
            except InvalidMessage:
                pass  # no HTTP/1.1 answer (a proxy's HTTP/1.0 error page while the server restarts): tried again
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else 1006
                if 4500 <= code <= 4999:
                    reason = exc.rcvd.reason if exc.rcvd else ""
                    raise RemoteError(code, "closed", f"server closed the connection: {reason}") from exc
            except OSError:
                pass
            attempt += 1
            time.sleep(random.random() * min(max_backoff_s, 0.5 * 2**attempt))

    def _session(
        self, ws: _PushSocket, wanted: list[str], on_subscribed: Callable[[], dict[str, Any] | None] | None
    ) -> Iterator[dict[str, Any]]:
        welcome = json.loads(ws.recv(timeout=30))
        heartbeat_s = float(welcome.get("heartbeat_s", 25))
        for stream in wanted or [f"user:{welcome['user']}"]:
            request: dict[str, Any] = {"op": "subscribe", "stream": stream}
            if stream in self.last_ids:
                request["since"] = self.last_ids[stream]
            ws.send(json.dumps(request))
        # The server handles messages in order: the pong to this ping means the subscriptions are in place.
        ws.send('{"op":"ping"}')
        subscribed = False
        last_ping = time.monotonic()
        while True:
            if time.monotonic() - last_ping >= heartbeat_s:
                ws.send('{"op":"ping"}')
                last_ping = time.monotonic()
            try:
                message = json.loads(ws.recv(timeout=max(0.1, heartbeat_s - (time.monotonic() - last_ping))))
            except TimeoutError:
                continue
            op = message.get("op")
            if op == "event":
                if not self._seen(message["stream"], message):
                    self.last_ids[message["stream"]] = message["id"]
                    yield message
            elif op == "pong" and not subscribed:
                subscribed = True
                extra = on_subscribed() if on_subscribed is not None else None
                if extra is not None:
                    yield extra
            elif op == "recovered" and not message.get("recovered"):
                self.last_ids[message["stream"]] = message["position"]
                yield message
            elif op == "error" and message.get("code") == "forbidden":
                raise RemoteError(403, "forbidden", message.get("reason", "forbidden"))

    def _seen(self, stream: str, message: dict[str, Any]) -> bool:
        last = self.last_ids.get(stream)
        if last is None:
            return False
        epoch, _, offset = last.rpartition(":")
        return bool(epoch == message["epoch"] and int(message["offset"]) <= int(offset))

    def follow(self, job_id: int) -> Iterator[dict[str, Any]]:
        """The job's current state as {"op": "state", "job": …} once subscribed, then its events until it ends."""

        def current_state() -> dict[str, Any]:
            return {"op": "state", "job": self.job(job_id)}

        for message in self.events([f"job:{job_id}"], on_subscribed=current_state):
            yield message
            if message.get("type") in TERMINAL_EVENTS:
                return
            if message.get("op") == "state" and message["job"]["state"] not in ("queued", "running"):
                return

    # workspace files -------------------------------------------------------------------------------------------
    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """A request: the response, or RemoteError (unreachable server, or an error answer)."""
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise RemoteError(0, "unreachable", f"cannot reach the server at {self.http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    def list_contents(self, path: str = "", *, content: bool = True) -> dict[str, Any]:
        """A folder's model with its entries (or a file's model, with its content unless content=False)."""
        return self._call("GET", f"/api/contents/{_quoted(path)}", params={"content": int(content)})

    def upload(
        self, remote: str, data: bytes | Iterable[bytes], *, overwrite: bool = False, size: int | None = None
    ) -> dict[str, Any]:
        """Upload raw bytes (or chunks of them, e.g. read from a file) to `remote`; the new file's model."""
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        params = {"overwrite": "true"} if overwrite else {}
        return self._call("PUT", f"/api/contents/{_quoted(remote)}", content=data, headers=headers, params=params)

    def download(
        self, remote: str, local: str | Path, *, on_progress: Callable[[int, int | None], None] | None = None
    ) -> Path:
        """Download `remote` to `local` atomically (a temporary file next to it, renamed when complete)."""
        target = Path(local)
        try:
            with self.http.stream("GET", f"/files/{_quoted(remote)}") as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_of(response)
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                try:
                    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".nbrelay-", suffix=".part")
                except OSError as exc:  # found from outside: a traceback for a folder that does not exist
                    raise _cannot_write(target, exc) from None
                try:
                    with os.fdopen(fd, "wb") as out:
                        done = 0
                        for chunk in response.iter_bytes(1 << 16):
                            out.write(chunk)
                            done += len(chunk)
                            if on_progress is not None:
                                on_progress(done, total)
                        out.flush()
                        os.fsync(out.fileno())
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, target)
                except BaseException as exc:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    if isinstance(exc, OSError):  # this machine's disk: full, say
                        raise NbrelayError(
                            f"cannot write {target}: {exc.strerror or exc}", code="cannot_write"
                        ) from None
                    raise
        except httpx.TransportError as exc:
            raise RemoteError(0, "unreachable", f"cannot reach the server at {self.http.base_url}: {exc}") from exc
        return target

    def copy(self, source: str, folder: str, name: str | None = None) -> dict[str, Any]:
        """Copy the file `source` into `folder` (as `name`, or as Jupyter names copies: x-Copy1.ipynb, …)."""
        body: dict[str, Any] = {"copy_from": source}
        if name is not None:
            body["name"] = name
        return self._call("POST", f"/api/contents/{_quoted(folder)}", json=body)

    def move(self, source: str, target: str, *, overwrite: bool = False) -> dict[str, Any]:
        """Rename or move a file or folder."""
        body = {"path": target, "overwrite": overwrite}
        return self._call("PATCH", f"/api/contents/{_quoted(source)}", json=body)

    def delete(self, path: str, *, recursive: bool = False) -> None:
        """Delete a file, a link, or a folder (a folder with something in it only with recursive=True)."""
        params = {"recursive": "true"} if recursive else {}
        self._send("DELETE", f"/api/contents/{_quoted(path)}", params=params)

    def mkdir(self, path: str) -> dict[str, Any]:
        """Create the folder `path` (its parent must exist)."""
        return self._call("PUT", f"/api/contents/{_quoted(path)}", json={"type": "directory"})

    def reports(self, notebook: str | None = None, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """The report history, newest first: {"reports": [{job, state, parameters, size_bytes, finished_at,
        report_url}], "total"}; with `notebook`, only that notebook's."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if notebook:
            params["notebook"] = notebook
        return self._call("GET", "/api/reports", params=params)


def _passing(status: int) -> bool:
    """Whether an answer says the server is away for now (unreachable: 0; its proxy's 502, 503, 504), not no."""
    return status in (0, 502, 503, 504)


def _quoted(path: str) -> str:
    """`quote(path, safe="/")`, and "." and ".." segments encoded too: HTTP clients (httpx included) resolve them
    before sending, so `a/../b` would quietly become `b`, and `../reports/5` would leave /api/contents for another
    route. Encoded, they reach the server as written, and it refuses them."""
    return "/".join("%2E" * len(part) if part in (".", "..") else part for part in quote(path, safe="/").split("/"))


def _cannot_write(target: Path, exc: OSError) -> NbrelayError:
    return NbrelayError(f"cannot write {target}: {exc.strerror or exc}", code="cannot_write")


def _error_of(response: httpx.Response) -> RemoteError:
    """The error for an error answer (the server's {"error": {code, message, hint}} when it sent one)."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {}
    return RemoteError(
        response.status_code,
        error.get("code", "http_error"),
        error.get("message", response.text[:200] or response.reason_phrase),
        body if isinstance(body, dict) else {},
        hint=error.get("hint"),
    )
