"""Who is asking. Mode `none` (a local single-user server): everyone is the local user, with admin rights."""

from __future__ import annotations

from fastapi import Request

from nbrelay.jobs import User


def current_user(request: Request) -> User:
    settings = request.app.state.settings
    return User(name=settings.local_user, admin=True)
