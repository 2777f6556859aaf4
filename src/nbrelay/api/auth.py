"""Who is asking (a dependency for every route), and the session routes that trade a token for a cookie."""

from __future__ import annotations

import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from nbrelay.api.openapi import ErrorResponse
from nbrelay.auth import SESSION_COOKIE, Authenticator, hash_token
from nbrelay.errors import Unauthorized
from nbrelay.forwarded import public_view
from nbrelay.jobs import User

router = APIRouter(prefix="/api", tags=["auth"])


def authenticator(request: Request) -> Authenticator:
    return request.app.state.auth


def peer(request: Request) -> str | None:
    return request.client.host if request.client else None


def _public_scheme(auth: Authenticator, request: Request) -> str:
    """The scheme the browser used: a trusted proxy's X-Forwarded-Proto (TLS ends at nginx), else the connection's."""
    view = public_view(request.headers, peer(request), auth.settings.trusted_proxies)
    return view.scheme or request.url.scheme


def too_many_failures(auth: Authenticator, request: Request) -> HTTPException | None:
    """429 with Retry-After for a client refused token checks (NBRELAY_AUTH_MAX_FAILURES); None otherwise.
    An HTTPException: the error handler keeps its headers."""
    wait_s = auth.retry_after_s(request.headers, peer(request))
    if wait_s <= 0:
        return None
    seconds = math.ceil(wait_s)
    failures, window_s = auth.settings.auth_max_failures, auth.settings.auth_failure_window_s
    return HTTPException(
        429,
        f"too many failed sign-ins from your address ({failures} in {window_s:g} s): try again in {seconds} s",
        headers={"Retry-After": str(seconds)},
    )


async def current_user(request: Request) -> User:
    auth = authenticator(request)
    refused = too_many_failures(auth, request)  # before: the failure that fills the window is still a 401
    user = await auth.resolve(request.headers, request.cookies, client_host=peer(request))
    if user is None:
        if refused is not None:
            raise refused
        hint = {
            "token": "send 'Authorization: Bearer <token>' or log in at POST /api/session",
            "header": "this server expects the user from its SSO proxy",
        }.get(auth.mode)
        raise Unauthorized("you need to log in", hint=hint)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


class Login(BaseModel):
    token: str = Field(..., min_length=1, max_length=512)


def _user_json(user: User, mode: str) -> dict[str, Any]:
    return {"user": user.name, "admin": user.admin, "auth_mode": mode}


@router.post(
    "/session",
    summary="Trade an API token for an HttpOnly session cookie",
    responses={
        401: {"model": ErrorResponse, "description": "unknown or revoked token, or not auth mode token"},
        429: {"model": ErrorResponse, "description": "too many failed sign-ins from this address (Retry-After)"},
    },
)
async def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    auth = authenticator(request)
    if auth.mode != "token":
        raise Unauthorized(f"log-in with a token is for auth mode 'token'; this server uses '{auth.mode}'")
    refused = too_many_failures(auth, request)
    user = await auth.check_token(body.token, auth.client_address(request.headers, peer(request)))
    record = await auth.store.find_token(hash_token(body.token)) if user is not None else None
    if user is None or record is None:  # record: revoked since the check's cache had it
        if refused is not None:
            raise refused
        raise Unauthorized("unknown or revoked token", code="bad_token")
    response.set_cookie(
        SESSION_COOKIE,
        auth.signer.sign(user.name, record.id),
        max_age=int(auth.settings.session_max_age_s),
        httponly=True,
        samesite="strict",
        secure=_public_scheme(auth, request) == "https",
        path="/",
    )
    return _user_json(user, auth.mode)


@router.get("/session", summary="Who you are")
async def whoami(user: CurrentUser, request: Request) -> dict[str, Any]:
    return _user_json(user, authenticator(request).mode)


@router.delete("/session", summary="Log out (drop the session cookie)")
async def logout(response: Response) -> dict[str, Any]:
    response.delete_cookie(SESSION_COOKIE, path="/")
    return {"ok": True}
