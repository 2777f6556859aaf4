"""The web page: `/` serves the single-page app (web/index.html and its ES modules under /static/app/), and
`/api/page` tells it what it needs before anything else: the auth mode, who is logged in, and their folders."""

from __future__ import annotations

import html
from functools import cache
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from nbrelay import __version__
from nbrelay.config import Settings

router = APIRouter(tags=["page"])

# The page runs only its own modules and shows reports in a sandboxed frame; nothing else may load or frame it.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}
BASE_MARK = "<!--base-->"


@cache
def _index_template() -> str:
    return (resources.files("nbrelay") / "web" / "index.html").read_text(encoding="utf-8")


def base_href(settings: Settings) -> str:
    """The page's base URL path with a trailing slash ("/nbrelay/"), or "" to stay relative to its address."""
    base = settings.base_path.rstrip("/")
    return f"{base}/" if base else ""


def render_index(settings: Settings) -> str:
    href = base_href(settings)
    # With a base path, every relative link resolves under it, also when the page is opened as /nbrelay (no
    # trailing slash). Without one, links resolve against the page's own address (the proxy's prefix included).
    tag = f'<base href="{html.escape(href, quote=True)}">' if href else ""
    return _index_template().replace(BASE_MARK, tag, 1)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def index(request: Request) -> HTMLResponse:
    return HTMLResponse(render_index(request.app.state.settings), headers=PAGE_HEADERS)


@router.get("/api/page", summary="What the web page needs first: auth mode, the user, their folders")
async def page_info(request: Request) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    auth = request.app.state.auth
    user = await auth.resolve(
        request.headers, request.cookies, client_host=request.client.host if request.client else None
    )
    info: dict[str, Any] = {
        "version": __version__,
        "auth_mode": settings.auth_mode,
        "base_path": settings.base_path.rstrip("/"),
        "user": None,
    }
    if user is not None:
        per_user = settings.per_user_folders and not user.admin
        info["user"] = {
            "name": user.name,
            "admin": user.admin,
            # Where the user may add files: everywhere (None), or their home and the shared folder.
            "home": f"{settings.home_dir}/{user.name}" if per_user else "",
            "areas": [f"{settings.home_dir}/{user.name}", settings.shared_dir] if per_user else None,
        }
    return info
