"""One exception tree for the whole service; each error knows its HTTP status and a stable code.

NbrelayError
├── BadRequest (400)            malformed input
│   ├── InvalidJson             a body that is not JSON: says where (line, column)
│   └── PathRefused             a path that would leave the workspace
├── NotFound (404)
├── Forbidden (403)
├── Conflict (409)
│   └── InvalidTransition       a job state change the rules do not allow
├── Unprocessable (422)         well-formed but wrong: unknown parameter, bad notebook, unknown kernel
├── PayloadTooLarge (413)
├── InsufficientStorage (507)   the server's disk is full (disk_refusal: what the disk refused, as an answer)
├── Unavailable (503)           a service we depend on cannot be reached now; try again later
│   └── HubUnavailable          the hub's broker (Redis) did not answer
└── RemoteError (any status)    what the Python client (nbrelay.client) got: a server's error answer, or none
"""

from __future__ import annotations

import errno
import logging
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


class InvalidJson(BadRequest):
    code = "invalid_json"

    def __init__(self, reason: str, document: str = "", position: int = 0):
        # 1-based, as editors count: the place to look, not a field name.
        line = document.count("\n", 0, position) + 1
        column = position - (document.rfind("\n", 0, position) + 1) + 1
        super().__init__(
            f"the request body is not valid JSON: {reason} at line {line}, column {column}", line=line, column=column
        )
        self.reason, self.document, self.position = reason, document, position

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason, self.document, self.position))


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


class InsufficientStorage(NbrelayError):
    status = 507
    code = "disk_full"


def disk_refusal(exc: OSError, what: str) -> NbrelayError:
    """What the server's disk refused, as the answer to the request: "could not delete a.txt: Operation not
    permitted" (a 403 where it lacks the right, a 507 when it is full, a 409 otherwise), not an internal error."""
    message = f"could not {what}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientStorage(message)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return Forbidden(message, code="disk_refused")
    return Conflict(message, code="disk_error")


class Unavailable(NbrelayError):
    status = 503
    code = "unavailable"


class HubUnavailable(Unavailable):
    code = "hub_unavailable"


class RemoteError(NbrelayError):
    """An error the Python client met: the server's answer (its HTTP status, or a WebSocket close code of
    4500-4999), code, message and hint, and the whole JSON body it sent; status 0 when it could not be reached."""

    def __init__(
        self, status: int, code: str, message: str, body: dict[str, Any] | None = None, *, hint: str | None = None
    ):
        super().__init__(message, code=code, hint=hint)
        self.status = status
        self.body = body or {}

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.code, self.message, self.body), {"hint": self.hint})


# What a database, broker, network or disk raises while it refuses for a while: the drivers' classes by name, so
# that this module imports none of them (sqlite3, SQLAlchemy, psycopg, asyncpg, redis-py, kombu).
_OUTAGE_CLASSES = {"OperationalError", "InterfaceError", "ConnectionError", "TimeoutError", "BusyLoadingError"}


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` is a service we depend on refusing for now (a line of log will do), not a bug of ours (whose
    traceback is wanted)."""
    if isinstance(exc, OSError | TimeoutError | HubUnavailable) or getattr(exc, "connection_invalidated", False):
        return True  # connection_invalidated: SQLAlchemy's word for a database connection that was lost
    return any(cls.__name__ in _OUTAGE_CLASSES for cls in type(exc).__mro__)


def reason_of(exc: BaseException) -> str:
    """Why `exc` happened, in one line of at most 300 characters: the driver's own error where SQLAlchemy wraps
    one (`orig`), else the exception's text, else its class."""
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
    return text or type(exc).__name__


def log_failure(logger: logging.Logger, exc: BaseException, message: str, *args: Any) -> None:
    """`message` with why it failed: one line for an outage (found from outside: PostgreSQL away for 35 s wrote
    1,317 lines of tracebacks, one per output event), the traceback for anything else."""
    if is_outage(exc):
        logger.warning(message + " (%s)", *args, reason_of(exc))
    else:
        logger.error(message, *args, exc_info=exc)
