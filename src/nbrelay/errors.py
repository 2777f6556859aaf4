"""One exception tree for the whole service; each error knows its HTTP status and a stable code.

NbrelayError
├── BadRequest (400)            malformed input
│   └── PathRefused             a path that would leave the workspace
├── NotFound (404)
├── Forbidden (403)
├── Conflict (409)
│   └── InvalidTransition       a job state change the rules do not allow
├── Unprocessable (422)         well-formed but wrong: unknown parameter, bad notebook, unknown kernel
└── PayloadTooLarge (413)
"""

from __future__ import annotations

from typing import Any


class NbrelayError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None, **details: Any):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body.update(self.details)
        return {"error": body}


class BadRequest(NbrelayError):
    status = 400
    code = "bad_request"


class PathRefused(BadRequest):
    code = "path_refused"


class Unauthorized(NbrelayError):
    status = 401
    code = "unauthorized"


class Forbidden(NbrelayError):
    status = 403
    code = "forbidden"


class NotFound(NbrelayError):
    status = 404
    code = "not_found"


class Conflict(NbrelayError):
    status = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"

    def __init__(self, job_id: int, current: str, wanted: str):
        super().__init__(f"job {job_id} is {current} and cannot become {wanted}", state=current)
        self.job_id = job_id
        self.current = current
        self.wanted = wanted

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.current, self.wanted))


class PayloadTooLarge(NbrelayError):
    status = 413
    code = "payload_too_large"


class Unprocessable(NbrelayError):
    status = 422
    code = "unprocessable"
