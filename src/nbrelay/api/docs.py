"""The API's documentation pages, `/docs` (Swagger UI) and `/redoc`, with their scripts and styles served from
here (the fastapi-offline package ships them): the pages work without internet, as the service does."""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from nbrelay.errors import NotFound

router = APIRouter(include_in_schema=False)

ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
ASSET_HEADERS = {"Cache-Control": "public, max-age=86400"}
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
NO_PICTURE = b"data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E"
# Relative addresses: the pages work under a proxy's sub-path too (/nbrelay/docs loads /nbrelay/openapi.json).
OPENAPI = "openapi.json"
ASSET_PATH = "docs/assets/"
# Swagger UI sends the document to an online validator for its badge unless told not to.
SWAGGER_PARAMETERS: dict[str, Any] = {"validatorUrl": None}
# Nothing from elsewhere, by rule: ReDoc's sidebar, for one, shows its maker's logo from their CDN.
DOCS_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
        "object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def _title(request: Request, page: str) -> str:
    return f"{request.app.title} - {page}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    page = get_swagger_ui_html(
        openapi_url=OPENAPI,
        title=_title(request, "API"),
        swagger_js_url=f"{ASSET_PATH}swagger-ui-bundle.js",
        swagger_css_url=f"{ASSET_PATH}swagger-ui.css",
        swagger_favicon_url=f"{ASSET_PATH}favicon.png",
        swagger_ui_parameters={**(request.app.swagger_ui_parameters or {}), **SWAGGER_PARAMETERS},
    )
    page.headers.update(DOCS_HEADERS)
    return page


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    page = get_redoc_html(
        openapi_url=OPENAPI,
        title=_title(request, "API reference"),
        redoc_js_url=f"{ASSET_PATH}redoc.standalone.js",
        redoc_favicon_url=f"{ASSET_PATH}favicon.png",
        with_google_fonts=False,
    )
    page.headers.update(DOCS_HEADERS)
    return page


def _path(name: str) -> str:
    return str(resources.files("fastapi_offline") / "static" / name)


@cache
def _redoc_script() -> bytes:
    """ReDoc, with the picture of its sidebar credit left out: it would come from its maker's CDN (the text stays)."""
    with open(_path("redoc.standalone.js"), "rb") as script:
        return script.read().replace(REDOC_CDN_LOGO, NO_PICTURE)


@router.get("/docs/assets/{name}")
async def asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no documentation asset {name!r}; there are: {', '.join(ASSETS)}", code="asset_not_found")
    if name == "redoc.standalone.js":
        body = await asyncio.to_thread(_redoc_script)
        return Response(body, media_type=media_type, headers=ASSET_HEADERS)
    return FileResponse(_path(name), media_type=media_type, headers=ASSET_HEADERS)
