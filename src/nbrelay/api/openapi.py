"""What the OpenAPI document says about errors: the one error model, `error_responses()` for a route's own
errors, and `document_common_errors`, which adds to every operation what the app around it can answer.

For a new router: `@router.get(..., responses=error_responses(404, 409))` names the statuses the route itself
raises (not found, conflict, …); 401 (needs a user), 403 (writes: foreign Origin), 400/415 (JSON bodies), 413
(bodies) and 422 (parameters) are added from what the route has. tests/api/test_openapi_conformance.py walks
the whole document and fails on any status, content type or body it does not declare.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel, ConfigDict, Field


class ApiError(BaseModel):
    model_config = ConfigDict(extra="allow")  # some errors add fields: problems, state, …

    code: str = Field(..., description="stable, for programs: job_not_found, invalid_json, …")
    message: str = Field(..., description="for people: what was wrong")
    hint: str | None = Field(None, description="what to do about it, when there is something to do")


class ErrorResponse(BaseModel):
    """Every error answer: {"error": {"code", "message", "hint"?, …}}."""

    error: ApiError


MEANINGS = {
    400: "malformed: the body is not JSON (the message gives line and column), or a path would leave the workspace",
    401: "not logged in (auth modes token and header)",
    403: "not yours to change, or a write sent by a page of a foreign Origin",
    404: "no such thing, or not yours to see",
    409: "the current state does not allow it (the file exists, the job has ended, …)",
    413: "the request body is over the limit (NBRELAY_MAX_BODY_BYTES; uploads: NBRELAY_MAX_UPLOAD_BYTES)",
    415: "the Content-Type is not the one this route reads; the message names it",
    422: "well-formed but wrong: the message names the field or parameter and what is accepted",
    429: "too many requests; Retry-After says when to try again",
    503: "a service nbrelay depends on did not answer; try again later",
}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status answers `ErrorResponse`."""
    return {status: {"model": ErrorResponse, "description": MEANINGS[status]} for status in statuses}


def _depends_on(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _depends_on(d, call) for d in dependant.dependencies)


def _has_parameters(dependant: Dependant) -> bool:
    own = dependant.path_params or dependant.query_params or dependant.header_params or dependant.body_params
    return bool(own) or any(_has_parameters(d) for d in dependant.dependencies)


def common_statuses(route: APIRoute | RouteContext, method: str, signed_in: Callable[..., Any]) -> list[int]:
    """What the app answers for this operation besides the route's own errors; `signed_in` is the dependency of
    the routes that need a user (they answer 401)."""
    statuses = []
    if _has_parameters(route.dependant):
        statuses.append(422)
    if _depends_on(route.dependant, signed_in):
        statuses.append(401)
    if method not in SAFE_METHODS:
        statuses += [403, 413]  # OriginGuard; BodyLimit
    if route.body_field is not None:
        statuses += [400, 415]  # not JSON; not sent as JSON
    return statuses


def _is_fastapis_422(response: dict[str, Any]) -> bool:
    """FastAPI's own 422 ({"detail": [...]}): ours is an ErrorResponse (app._validation_error)."""
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def document_common_errors(app: FastAPI, signed_in: Callable[..., Any]) -> None:
    """Make `app.openapi()` add the common statuses to every operation, as `ErrorResponse` (401 to those that
    depend on `signed_in`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        for model in (ApiError, ErrorResponse):
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            schema.pop("$defs", None)
            schemas.setdefault(model.__name__, schema)
        ref = {"$ref": "#/components/schemas/ErrorResponse"}
        for route in iter_route_contexts(app.routes):  # with the routes of included routers, as FastAPI sees them
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods or ():
                operation = document["paths"].get(route.path_format, {}).get(method.lower())
                if operation is None:
                    continue
                responses = operation["responses"]
                for status, response in responses.items():
                    # Errors are JSON whatever the route answers when all goes well (FastAPI gives a `model`
                    # the route's media type: text/event-stream for /sse, text/html for a report).
                    if status >= "400" and "ErrorResponse" in json.dumps(response.get("content", {})):
                        response["content"] = {"application/json": {"schema": ref}}
                for status in common_statuses(route, method, signed_in):
                    if str(status) not in responses or _is_fastapis_422(responses[str(status)]):
                        content = {"application/json": {"schema": ref}}
                        responses[str(status)] = {"description": MEANINGS[status], "content": content}
        if "HTTPValidationError" not in json.dumps(document["paths"]):
            schemas.pop("HTTPValidationError", None)  # FastAPI's 422, replaced everywhere by ours
            schemas.pop("ValidationError", None)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
