"""The contents API (like Jupyter Server's /api/contents) and raw file downloads."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from nbrelay.api.auth import CurrentUser
from nbrelay.api.guards import capped
from nbrelay.api.openapi import error_responses
from nbrelay.api.schemas import FILE_NAME_PATTERN, WORKSPACE_PATH_PATTERN, WorkspacePath
from nbrelay.contents import Contents
from nbrelay.errors import BadRequest, InvalidJson, PayloadTooLarge, Unprocessable
from nbrelay.jobs import User
from nbrelay.text import lone_surrogate, may_hold_surrogate, refusal

log = logging.getLogger(__name__)
router = APIRouter(tags=["contents"])


def contents(request: Request) -> Contents:
    return request.app.state.contents


Service = Annotated[Contents, Depends(contents)]
Overwrite = Annotated[bool, Query(description="replace an existing file")]


async def _json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request is {declared} bytes; the limit is {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"the request is over the limit of {limit} bytes")
    try:
        document = json.loads(body or b"{}")
    except json.JSONDecodeError as exc:
        raise InvalidJson(exc.msg, exc.doc, exc.pos) from None
    except (ValueError, RecursionError):  # not UTF-8; nested too deeply for the parser
        raise BadRequest(
            "the request body is not valid JSON (UTF-8, nested at most ~1000 levels)", code="invalid_json"
        ) from None
    found = lone_surrogate(document) if may_hold_surrogate(body) else None
    if found is not None:
        raise Unprocessable(refusal(found), code="invalid_request")
    return document


def _capped(receive: Receive, limit: int) -> Receive:
    """A receive channel that refuses a request body longer than `limit` bytes (413)."""
    return capped(receive, limit, lambda: PayloadTooLarge(f"the upload is over the limit of {limit} bytes"))


Content = Annotated[int, Query(ge=0, le=1, description="1: with the content; 0: the model alone")]
Format = Annotated[str | None, Query(pattern="^(text|base64|json)$", description="default: by file type")]
# The bodies PATCH and POST read (by hand, to answer Jupyter's clients as Jupyter does); documented here.
NAME_SCHEMA = {"type": "string", "pattern": FILE_NAME_PATTERN, "description": "a file name (at most 255 bytes)"}
PATH_SCHEMA = {"type": "string", "pattern": WORKSPACE_PATH_PATTERN}
RENAME_BODY = {
    "type": "object",
    "properties": {"path": PATH_SCHEMA, "overwrite": {"type": "boolean", "default": False}},
    "required": ["path"],
}
COPY_OR_MKDIR_BODY = {
    "anyOf": [
        {"type": "object", "properties": {"copy_from": PATH_SCHEMA, "name": NAME_SCHEMA}, "required": ["copy_from"]},
        {
            "type": "object",
            "properties": {"type": {"const": "directory"}, "name": NAME_SCHEMA},
            "required": ["type"],
        },
    ]
}
UPLOAD_BODY = {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    "multipart/form-data": {
        "schema": {
            "type": "object",
            "properties": {"file": {"type": "string", "format": "binary"}},
            "required": ["file"],
        }
    },
}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.get("/api/contents", summary="The workspace root", responses=error_responses(404))
async def get_root(service: Service, user: CurrentUser, content: Content = 1, format: Format = None) -> dict[str, Any]:
    return await service.get(user, "", content=bool(content), fmt=format)


@router.get(
    "/api/contents/{path:path}",
    summary="A folder listing, or a file with its content",
    responses=error_responses(400, 403, 404),
)
async def get_contents(
    path: WorkspacePath, service: Service, user: CurrentUser, content: Content = 1, format: Format = None
) -> dict[str, Any]:
    return await service.get(user, path, content=bool(content), fmt=format)


@router.put(
    "/api/contents/{path:path}",
    status_code=201,
    summary="Upload or save a file: the raw bytes, a multipart form's 'file', or Jupyter's JSON model "
    "{type, format, content}",
    responses=error_responses(400, 404, 409),
    openapi_extra={"requestBody": {"content": UPLOAD_BODY}},
)
async def put_contents(
    path: WorkspacePath, request: Request, service: Service, user: CurrentUser, overwrite: Overwrite = False
) -> dict[str, Any]:
    try:
        return await _put(path, request, service, user, overwrite)
    except ClientDisconnect:
        # Nothing was saved (save_stream keeps the old file whole); the client is gone, so this is for the log:
        # one line, not an "unhandled error" with a traceback (found from outside).
        log.info("the upload of %s was cut off by its client before its end; nothing was saved", path)
        raise BadRequest(
            f"the upload of {path} was cut off before its end; nothing was saved", code="upload_cut_off"
        ) from None


async def _put(path: str, request: Request, service: Contents, user: User, overwrite: bool) -> dict[str, Any]:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = service.settings.max_upload_bytes
    if kind == "application/json":
        model = await _json_body(request, limit + limit // 3 + 4096)  # base64 is 4/3 of the bytes
        if not isinstance(model, dict):
            raise BadRequest("expected a JSON object {type, format, content}", code="invalid_request")
        return await service.save_model(user, path, model, overwrite=overwrite)
    if kind == "multipart/form-data":
        # Starlette spools file parts to disk whatever their size: cap the whole body before it reads it.
        request = Request(request.scope, _capped(request.receive, limit + 64 * 1024))
        form = await request.form(max_files=1, max_part_size=limit)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise BadRequest("multipart uploads need a 'file' field", code="invalid_request")

        async def parts() -> AsyncIterator[bytes]:
            while chunk := await upload.read(1 << 16):
                yield chunk

        try:
            return await service.save_stream(user, path, parts(), overwrite=overwrite, expected_size=upload.size)
        finally:
            await upload.close()
    length = request.headers.get("content-length")
    expected = int(length) if length and length.isdigit() else None
    return await service.save_stream(user, path, request.stream(), overwrite=overwrite, expected_size=expected)


@router.patch(
    "/api/contents/{path:path}",
    summary='Rename or move: {"path": new path, "overwrite"?: bool}',
    responses=error_responses(400, 404, 409),
    openapi_extra=json_body(RENAME_BODY),
)
async def patch_contents(path: WorkspacePath, request: Request, service: Service, user: CurrentUser) -> dict[str, Any]:
    body = await _json_body(request, 64 * 1024)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        raise BadRequest('expected {"path": "new/path"}', code="invalid_request")
    overwrite = body.get("overwrite", False)
    if not isinstance(overwrite, bool):
        # Found from outside: "overwrite": "false" was taken as true (a non-empty string) and replaced the target.
        raise Unprocessable(f"'overwrite' is true or false, not {overwrite!r}", code="invalid_request")
    return await service.rename(user, path, body["path"], overwrite=overwrite)


COPY_OR_MKDIR: dict[str, Any] = {
    "status_code": 201,
    "responses": error_responses(400, 404, 409, 422),
    "openapi_extra": json_body(COPY_OR_MKDIR_BODY),
}


@router.post("/api/contents", summary="Copy into the root, or create a folder there", **COPY_OR_MKDIR)
async def post_root(request: Request, service: Service, user: CurrentUser) -> dict[str, Any]:
    return await post_contents("", request, service, user)


@router.post("/api/contents/{path:path}", summary="In this folder: copy a file, or create a folder", **COPY_OR_MKDIR)
async def post_contents(path: WorkspacePath, request: Request, service: Service, user: CurrentUser) -> dict[str, Any]:
    body = await _json_body(request, 64 * 1024)
    if not isinstance(body, dict):
        raise BadRequest('expected {"copy_from": "path"} or {"type": "directory", "name": "…"}')
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or "/" in name or name.strip() in ("", ".", "..")):
        raise BadRequest("'name' must be a file name (not empty, '.' or '..', and no '/')", code="invalid_request")
    if isinstance(body.get("copy_from"), str):
        return await service.copy(user, body["copy_from"], path, name)
    if body.get("type") == "directory":
        folder = path.strip("/")
        return await service.mkdir(
            user, f"{folder}/{name or 'Untitled Folder'}" if folder else name or "Untitled Folder"
        )
    raise BadRequest('expected {"copy_from": "path"} or {"type": "directory", "name": "…"}', code="invalid_request")


@router.delete(
    "/api/contents/{path:path}",
    status_code=204,
    summary="Delete a file, a link, or a folder",
    responses=error_responses(400, 404, 409),
)
async def delete_contents(
    path: WorkspacePath, service: Service, user: CurrentUser, recursive: Annotated[bool, Query()] = False
) -> Response:
    await service.delete(user, path, recursive=recursive)
    return Response(status_code=204)


@router.get(
    "/files/{path:path}",
    summary="Download a workspace file",
    response_class=FileResponse,
    responses={
        200: {"content": {"*/*": {}}, "description": "the file, as an attachment (its type by its name)"},
        **error_responses(400, 403, 404),
    },
)
async def download(path: WorkspacePath, service: Service, user: CurrentUser) -> FileResponse:
    file = service.file_for_download(user, path)
    # Workspace files are untrusted: an attachment, never rendered on the app's origin.
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    return FileResponse(file, filename=file.name, headers=headers, content_disposition_type="attachment")
