"""Python client for the nbrelay REST API: submit a notebook, read jobs, wait for one to finish."""

from __future__ import annotations

import time
from typing import Any

import httpx


class NbrelayError(Exception):
    """An error answer from the server, with its status, code and message."""

    def __init__(self, status: int, code: str, message: str, body: dict[str, Any] | None = None):
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message
        self.body = body or {}


class Client:
    def __init__(self, base_url: str = "http://127.0.0.1:8765", *, token: str | None = None, timeout_s: float = 30):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise NbrelayError(0, "unreachable", f"cannot reach the server at {self.http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                error = body.get("error", {})
            except ValueError:
                body, error = {}, {}
            raise NbrelayError(
                response.status_code,
                error.get("code", "http_error"),
                error.get("message", response.text[:200] or response.reason_phrase),
                body,
            )
        return response.json()

    def parameters(self, notebook: str) -> dict[str, Any]:
        return self._call("GET", f"/api/notebooks/{notebook}/parameters")

    def submit(
        self,
        notebook: str,
        parameters: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
        cell_timeout_s: float | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"notebook": notebook, "parameters": parameters or {}}
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        if cell_timeout_s is not None:
            body["cell_timeout_s"] = cell_timeout_s
        return self._call("POST", "/api/jobs", json=body)

    def job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/api/jobs/{job_id}")

    def jobs(self, *, state: str | None = None, notebook: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if notebook:
            params["notebook"] = notebook
        return self._call("GET", "/api/jobs", params=params)

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._call("POST", f"/api/jobs/{job_id}/cancel")

    def report(self, job_id: int) -> str:
        response = self.http.get(f"/api/jobs/{job_id}/report")
        response.raise_for_status()
        return response.text

    def wait(self, job_id: int, *, poll_s: float = 0.2, timeout_s: float | None = None) -> dict[str, Any]:
        """Poll until the job is finished; returns the final job."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["state"] not in ("queued", "running"):
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job['state']} after {timeout_s} s")
            time.sleep(poll_s)
