"""The contents API (like Jupyter Server's /api/contents) and raw file downloads."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.types import Message, Receive

from nbrelay.api.auth import CurrentUser
from nbrelay.contents import Contents
from nbrelay.errors import BadRequest, PayloadTooLarge

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
        return json.loads(body or b"{}")
    except (ValueError, RecursionError):
        raise BadRequest("the request body is not valid JSON", code="invalid_json") from None


def _capped(receive: Receive, limit: int) -> Receive:
    """A receive channel that refuses a request body longer than `limit` bytes (413)."""
    seen = 0

    async def capped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise PayloadTooLarge(f"the upload is over the limit of {limit} bytes")
        return message

    return capped


@router.get("/api/contents", summary="The workspace root")
@router.get("/api/contents/{path:path}", summary="A folder listing, or a file with its content")
async def get_contents(
    service: Service,
    user: CurrentUser,
    path: str = "",
    content: Annotated[int, Query(ge=0, le=1)] = 1,
    format: Annotated[str | None, Query(pattern="^(text|base64|json)$")] = None,
) -> dict[str, Any]:
    return await service.get(user, path, content=bool(content), fmt=format)


@router.put("/api/contents/{path:path}", status_code=201, summary="Upload or save a file (raw, multipart or JSON)")
async def put_contents(
    path: str, request: Request, service: Service, user: CurrentUser, overwrite: Overwrite = False
) -> dict[str, Any]:
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


@router.patch("/api/contents/{path:path}", summary='Rename or move: {"path": new path, "overwrite"?: bool}')
async def patch_contents(path: str, request: Request, service: Service, user: CurrentUser) -> dict[str, Any]:
    body = await _json_body(request, 64 * 1024)
    if not isinstance(body, dict) or not isinstance(body.get("path"), str):
        raise BadRequest('expected {"path": "new/path"}', code="invalid_request")
    return await service.rename(user, path, body["path"], overwrite=bool(body.get("overwrite", False)))


@router.post("/api/contents", status_code=201, summary="Copy into the root, or create a folder there")
@router.post("/api/contents/{path:path}", status_code=201, summary="In this folder: copy a file, or create a folder")
async def post_contents(request: Request, service: Service, user: CurrentUser, path: str = "") -> dict[str, Any]:
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


@router.delete("/api/contents/{path:path}", status_code=204, summary="Delete a file, a link, or a folder")
async def delete_contents(
    path: str, service: Service, user: CurrentUser, recursive: Annotated[bool, Query()] = False
) -> Response:
    await service.delete(user, path, recursive=recursive)
    return Response(status_code=204)


@router.get("/files/{path:path}", summary="Download a workspace file", response_class=FileResponse)
async def download(path: str, service: Service, user: CurrentUser) -> FileResponse:
    file = service.file_for_download(user, path)
    # Workspace files are untrusted: an attachment, never rendered on the app's origin.
    headers = {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    return FileResponse(file, filename=file.name, headers=headers, content_disposition_type="attachment")
