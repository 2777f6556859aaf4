"""Who is asking (a dependency for every route), and the session routes that trade a token for a cookie."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from nbrelay.auth import SESSION_COOKIE, Authenticator
from nbrelay.errors import Unauthorized
from nbrelay.jobs import User

router = APIRouter(prefix="/api", tags=["auth"])


def authenticator(request: Request) -> Authenticator:
    return request.app.state.auth


async def current_user(request: Request) -> User:
    auth = authenticator(request)
    user = await auth.resolve(
        request.headers, request.cookies, client_host=request.client.host if request.client else None
    )
    if user is None:
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


@router.post("/session", summary="Trade an API token for an HttpOnly session cookie")
async def login(body: Login, request: Request, response: Response) -> dict[str, Any]:
    auth = authenticator(request)
    user = await auth.user_for_token(body.token) if auth.mode == "token" else None
    if auth.mode != "token":
        raise Unauthorized(f"log-in with a token is for auth mode 'token'; this server uses '{auth.mode}'")
    if user is None:
        raise Unauthorized("unknown or revoked token", code="bad_token")
    response.set_cookie(
        SESSION_COOKIE,
        auth.signer.sign(user),
        max_age=int(auth.settings.session_max_age_s),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
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
